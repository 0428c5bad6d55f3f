"""The `absorption` task (first-letter feature absorption) and its vocabulary data."""
