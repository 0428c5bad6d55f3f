"""The probing family: `sparse_probing`, `tpp` and `scr`, with their shared samples, pooled features and memo."""
