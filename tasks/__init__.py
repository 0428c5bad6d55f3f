"""Built-in task files. Installed as the package `saebench_scaffold.builtin_tasks` (see pyproject.toml),
so a wheel carries these same files and the task registry finds them there."""
