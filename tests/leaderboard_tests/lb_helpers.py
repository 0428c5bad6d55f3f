"""Helpers shared by the leaderboard tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=1))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
