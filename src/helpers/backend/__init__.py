"""Keras on TensorFlow and JAX: compiled functions per model, graph splitting, device transfer, padded batched
forwards, the persistent compilation cache, host-drawn initializers.
"""
