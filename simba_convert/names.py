"""The names users choose between, defined once (imports nothing, so the CLI can read them without torch)."""

CRITERIA = ("last", "global", "delta", "output", "random")  # impact-score criteria (ops/score/)
SCHEDULES = ("calibrated", "linear", "uniform")  # keep-ratio schedules (pruning/schedules.py, pipeline/config.py)
