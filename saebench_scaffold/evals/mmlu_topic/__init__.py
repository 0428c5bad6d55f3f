"""The `mmlu_topic` task: MMLU subject categories and the question bootstrap."""
