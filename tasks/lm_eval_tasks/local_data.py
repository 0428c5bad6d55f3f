"""Helpers of the `*_local` lm-eval task files: read the local copy of a data set, and map the derived
HellaSwag copy onto the fields lm-eval's `hellaswag` prompt reads.

`load_json` is the task files' `custom_dataset`: lm-eval calls it with the task's `dataset_kwargs` and
`metadata`. Relative `data_files` are taken under the data directory — `metadata.data_dir` (what
`downstream` passes), else `$SAEBENCH_DATA_DIR` — and read with `datasets.load_dataset("json", ...)`,
as `dataset_path: json` would; a missing file is one line naming it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DATA_DIR_ENV = "SAEBENCH_DATA_DIR"


def resolve_data_files(data_files: dict[str, str], data_dir: str | None = None) -> dict[str, str]:
    root = data_dir or os.environ.get(DATA_DIR_ENV) or None
    out = {}
    for split, name in data_files.items():
        path = Path(name)
        if not path.is_absolute():
            if root is None:
                raise FileNotFoundError(f"{name} is relative to the data directory, and none is set "
                                        f"(--data-dir or ${DATA_DIR_ENV})")
            path = Path(root) / path
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} does not exist")
        out[split] = str(path)
    return out


def load_json(data_files: dict[str, str], data_dir: str | None = None, **_metadata):
    import datasets

    return datasets.load_dataset("json", data_files=resolve_data_files(data_files, data_dir))


_SENTENCE_END = re.compile(r"^(.*[.!?]\s)([^.!?]*)$", re.S)


def hellaswag_process_docs(dataset):
    """lm-eval's `hellaswag` `process_docs` on the derived copy (fields `activity_label`, `ctx`,
    `endings`, `label`; `ctx` = ctx_a + " " + ctx_b already joined, bracket tags already cleaned).
    lm-eval capitalizes ctx_b (`str.capitalize`); the copy no longer says where ctx_b starts, so the
    trailing unfinished sentence of `ctx` (after the last ". ", "! " or "? ") stands for it. Then
    lm-eval's own `preprocess` builds `query` and `choices` as it does for the hub rows."""
    from lm_eval.tasks.hellaswag.utils import preprocess

    def one(doc):
        ctx = doc["ctx"]
        m = _SENTENCE_END.match(ctx)
        if m and m.group(2):
            ctx = m.group(1) + m.group(2).capitalize()
        return {"query": preprocess(doc["activity_label"] + ": " + ctx),
                "choices": [preprocess(e) for e in doc["endings"]], "gold": int(doc["label"])}

    return dataset.map(one)
