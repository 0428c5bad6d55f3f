"""Corpus layout: where the disjoint token sets of a text corpus (training, density/FVU, CE) start,
in the full corpora and in the small sample embedded in the package."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CONTEXT = 128  # SAEBench's context length


@dataclass(frozen=True)
class CorpusLayout:
    """Where the disjoint token sets of a text corpus start, in contexts: training (the bundled
    baselines and PCA fits), density/FVU, and CE. Each set must end before the next one starts."""

    train: int
    eval: int
    ce: int

    def starts(self) -> tuple[int, int, int]:
        return self.train, self.eval, self.ce


# The full corpora (the local Wikipedia sample holds ~58,900 contexts; the hub's far more).
FULL_LAYOUT = CorpusLayout(train=0, eval=20_000, ce=50_000)
# The embedded sample holds ~5,900 contexts (SmolLM2 tokenizer): room for a 200k-token PCA fit,
# 2,048 density contexts (260k tokens; `core` reads 131k by default) and ~1,800 CE contexts.
EMBEDDED_LAYOUT = CorpusLayout(train=0, eval=2_048, ce=4_096)
REGION_NAMES = ("training", "density/FVU", "CE")
