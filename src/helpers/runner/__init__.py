"""Running the study: profiles and parameter checks, the papermill pipeline, kernels, locks, staging, provenance,
sweeps and their executors.
"""
