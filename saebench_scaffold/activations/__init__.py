"""Activations: the language model's activations at one hook point, computed once per token set and
cached on disk (`cache.py`) in checksummed shards shared safely by many processes (`shards.py`)."""
