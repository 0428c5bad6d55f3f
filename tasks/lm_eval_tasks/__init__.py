"""lm-eval task files (YAML) of the local data copies, and their helpers; read by lm-eval through its include path."""
