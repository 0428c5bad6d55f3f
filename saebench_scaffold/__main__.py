"""`python -m saebench_scaffold ...` is the `saebench-scaffold` command (handy where scripts are not on PATH)."""

from .cli import app

app(prog_name="saebench-scaffold")
