"""Result files: their typed schema (`schema.py`, SAEBench's envelope plus our provenance) and
their export in SAEBench's own layout (`saebench_export.py`)."""
