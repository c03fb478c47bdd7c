"""What a reader sees: figures, tables, the summary's verdicts, the HTML report, the comparison of runs, the
published reference runs and the per-image explorer.
"""
