"""Model access and datasets: the language model (`model.py`) and the dataset registry (`data.py`,
with the embedded offline text sample in `embedded_data/`)."""
