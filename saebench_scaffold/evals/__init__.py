"""Tasks: the framework (`base`, `registry`) and the built-in task implementations."""
