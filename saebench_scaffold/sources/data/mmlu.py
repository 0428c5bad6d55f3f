"""MMLU test questions with their subjects."""

from __future__ import annotations

from pathlib import Path

from .registry import DatasetEntry, hub_dataset, read_jsonl, register


def _mmlu_local(p: Path):
    yield from read_jsonl(p)


def _mmlu_hub():
    for r in hub_dataset("cais/mmlu", "all", split="test"):
        yield {"subject": r["subject"], "question": r["question"], "choices": r["choices"], "answer": r["answer"]}


register(DatasetEntry("mmlu", "mmlu", "mmlu/test.jsonl", "cais/mmlu", _mmlu_local, _mmlu_hub,
                      "MMLU test questions with subjects (57 subjects)"))
