"""Rebuild the embedded text sample (saebench_scaffold/sources/embedded_data/wikipedia_en_small.jsonl.xz).

It is the last ARTICLES articles of the data directory's `text/wikipedia_en_sample.jsonl`, unchanged
(fields id, title, text), xz-compressed. The last articles lie far past the contexts the bundled
baselines were trained on (the first 16,384 contexts of that file), so scoring them on the embedded
sample never reads their training text. Usage:

    python scripts/make_embedded_sample.py /path/to/data_dir
"""

import lzma
import sys
from pathlib import Path

ARTICLES = 1700
OUT = Path(__file__).resolve().parents[1] / "saebench_scaffold" / "sources" / "embedded_data" / "wikipedia_en_small.jsonl.xz"


def main(data_dir: str) -> None:
    lines = [line for line in (Path(data_dir) / "text" / "wikipedia_en_sample.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    blob = ("\n".join(lines[-ARTICLES:]) + "\n").encode("utf-8")
    OUT.write_bytes(lzma.compress(blob, preset=9 | lzma.PRESET_EXTREME))
    print(f"{OUT}: {ARTICLES} articles, {len(blob) / 1e6:.1f} MB of text, {OUT.stat().st_size / 1e6:.2f} MB compressed")


if __name__ == "__main__":
    main(sys.argv[1])
