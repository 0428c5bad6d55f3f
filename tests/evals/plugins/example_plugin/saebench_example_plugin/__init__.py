"""Example saebench-scaffold plugin (used by tests/evals/plugins)."""
