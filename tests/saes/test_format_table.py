"""The README's architecture and normalisation tables list exactly what the registry and the loaders
accept, each foreign name in the row of the architecture it loads into."""

from __future__ import annotations

import re
from pathlib import Path

from saebench_scaffold.saes import ARCHITECTURES
from saebench_scaffold.saes.loaders import DICTIONARY_LEARNING_CLASSES, SAELENS_ARCHITECTURES, SAELENS_TRANSCODERS
from saebench_scaffold.saes.normalization import SAELENS_NORMS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _table(header: str) -> list[list[list[str]]]:
    """Rows of the table whose header line starts with `header`: per cell, its `backticked` names."""
    lines = README[README.index(header):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = line.strip().strip("|").split("|")
        rows.append([re.findall(r"`([^`]+)`", cell) for cell in cells])
    return rows


def _names_by_row(column: int) -> dict[str, str]:
    return {name: row[0][0] for row in _table("| architecture | latents per token |") for name in row[column]}


def test_architecture_table_matches_the_registry():
    names = [row[0][0] for row in _table("| architecture | latents per token |")]
    assert len(names) == len(set(names)) and set(names) == set(ARCHITECTURES)


def test_foreign_names_sit_in_the_row_they_load_into():
    assert _names_by_row(2) == SAELENS_ARCHITECTURES
    assert _names_by_row(3) == DICTIONARY_LEARNING_CLASSES


def test_normalisation_table_lists_every_saelens_option():
    rows = _table("| setting | how it runs |")
    assert {row[0][0] for row in rows} == {*SAELENS_NORMS, "rescale_acts_by_decoder_norm"}


def test_transcoders_are_named_in_the_refusal():
    section = README[README.index("**Transcoders are refused"):]
    section = section[:section.index("\n\n")]
    assert all(f"`{name}`" in section for name in SAELENS_TRANSCODERS)
