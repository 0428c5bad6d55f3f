"""Packing lm-eval requests into prefix trees: every shared token prefix runs once.

A multiple-choice document asks for log p(choice | context) for each of its choices: the inputs
(context + choice) share the context (PIQA, HellaSwag) or the part before the blank (WinoGrande).
Sorted lexicographically, each input shares its longest common prefix with its predecessor, so a row
of inputs packs into a tree whose nodes are the distinct prefixes: node = one token at depth d
(position id d), attending to its ancestors and itself. Under causal attention a token's states depend
only on its prefix, so every node's states equal those the token has in any input that contains its
prefix: one forward over the packed row gives every input's logits, with no padding inside the row
and each shared prefix computed once (HellaSwag's four endings share one context).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

PACK_TOKENS = 256
"""Tokens per packed row (0: right-padded batches of `batch_size` requests, as lm-eval's HFLM). A row
holds several documents' prefix trees; longer rows cost more attention over masked-out pairs."""


@dataclass
class PackedRow:
    tokens: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    """Position id of each node (its depth in the tree)."""
    members: list[tuple[int, list[int]]] = field(default_factory=list)
    """(input index, node of each of its positions)."""
    _last: tuple[tuple[int, ...], list[int]] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def mask(self) -> torch.Tensor:
        """[n, n] bool: node i may attend to node j (j is i or one of its ancestors)."""
        n = len(self.tokens)
        out = torch.zeros(n, n, dtype=torch.bool)
        for _, nodes in self.members:
            idx = torch.tensor(nodes)
            out[idx.unsqueeze(1), idx.unsqueeze(0)] |= torch.ones(len(nodes), len(nodes), dtype=torch.bool).tril()
        return out


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def pack(inputs: list[tuple[int, ...]], row_tokens: int) -> list[PackedRow]:
    """Rows of at most `row_tokens` nodes (an input longer than that gets a row of its own) holding
    every input once; inputs are placed in lexicographic order, each sharing its longest common
    prefix with the one before it in the same row."""
    rows: list[PackedRow] = []
    row: PackedRow | None = None
    for i in sorted(range(len(inputs)), key=lambda k: inputs[k]):
        x = inputs[i]
        if not x:
            raise ValueError("an empty input cannot be packed")
        shared = common_prefix(row._last[0], x) if row is not None and row._last is not None else 0
        if row is None or (len(row) + len(x) - shared > row_tokens and len(row) > 0):
            row, shared = PackedRow(), 0
            rows.append(row)
        nodes = (row._last[1][:shared] if shared else []) + list(range(len(row), len(row) + len(x) - shared))
        row.tokens.extend(x[shared:])
        row.depth.extend(range(shared, len(x)))
        row.members.append((i, nodes))
        row._last = (x, nodes)
    return rows
