"""Example saebench-scaffold plugin (used by tests/plugins_tests)."""
