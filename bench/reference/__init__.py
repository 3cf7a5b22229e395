"""Single-process reference implementations the pipelines are checked and timed against."""
