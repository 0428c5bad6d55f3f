"""The SHIFT machinery both `scr` designs share (`scr.py`'s docstring): the six example sets of a
pair, SAEBench's torch probes, the latents' effects, the ablation and the score; `Group`, one
example cache and the pairs scored on it."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import safe_open

from ..probes import select_top_n, small_ops
from .features import ablate_pooled
from .scr_config import SCRConfig

# Our names of the six example sets -> SAEBench's keys (dataset_info.PAIRED_CLASS_KEYS): the positives
# of a probe are set `name`, its negatives set `name_neg`.
SAEBENCH_SET_NAMES = {
    "column2": "male / female", "column2_neg": "female_data_only",
    "column1": "professor / nurse", "column1_neg": "nurse_data_only",
    "biased": "male_professor / female_nurse", "biased_neg": "female_nurse_data_only",
}
PROBES = ("column1", "column2", "biased")
DIRECTIONS = ((1, "column2", "column1"), (2, "column1", "column2"))  # (dir, attribute ablated, data measured)
N_LATENTS_RECORDED = 20  # top latents per (pair, seed, direction) kept in the result for inspection


def spurious_corr_sets(pos_pos: list[int], pos_neg: list[int], neg_pos: list[int], neg_neg: list[int], q: int,
                       seed: int) -> dict[str, list[int]]:
    """SAEBench's `get_spurious_corr_data` on example indices: the six sets (see SAEBENCH_SET_NAMES),
    each of 2q, shuffled in its order by one numpy generator seeded with `seed`."""
    if min(len(pos_pos), len(neg_neg)) < 2 * q or min(len(pos_neg), len(neg_pos)) < q:
        raise ValueError("quadrants too small for the biased sets")
    sets = {"column2": pos_pos[:q] + pos_neg[:q], "column2_neg": neg_pos[:q] + neg_neg[:q],
            "column1": pos_pos[:q] + neg_pos[:q], "column1_neg": pos_neg[:q] + neg_neg[:q],
            "biased": pos_pos[:2 * q], "biased_neg": neg_neg[:2 * q]}
    rng = np.random.default_rng(seed)
    for name in sets:  # SAEBench's shuffle order
        rng.shuffle(sets[name])
    return sets


def pair_sets(split: dict, pair: tuple[str, str], column2_values: tuple[str, str], test: bool, q: int,
              seed: int) -> dict[str, list[int]]:
    """The six sets of one column-1 pair from the training (or test) part of a seed's split."""
    (a, b), (p, n) = pair, column2_values
    part = int(test)
    return spurious_corr_sets(split[(a, p)][part], split[(b, p)][part], split[(a, n)][part], split[(b, n)][part], q, seed)



@dataclass
class Group:
    """One example cache and the pairs scored on it: a data set of SAEBench's design, or the file of
    the columns design."""
    cache_name: str
    texts: list[str]
    pairs: list[tuple[str, str]]
    column2_values: tuple[str, str]
    detail_prefix: str  # per-pair detail name: f"{detail_prefix}_scr_{a}_{b}_results"
    sets: dict  # (pair, seed) -> (train sets, test sets)
    shuffle_seed: dict[int, int]  # seed -> the sets' shuffle seed
    n_train: int
    n_test: int
    capped: bool
    dataset: str  # registry name
    available: dict  # rows per cell in the data (per split, in SAEBench's design)
    memo_extra: tuple = ()



# ---- SAEBench's torch probe -----------------------------------------------------------------------

def prepare_probe_data(acts: torch.Tensor, pos: list[int], neg: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """`probe_training.prepare_probe_data` for SCR: positives, then the paired set's examples in a
    random order, labels 1 / 0, shuffled (two draws from torch's global generator, as SAEBench)."""
    x_pos, x_neg = acts[pos], acts[neg]
    x_neg = x_neg[torch.randperm(len(x_neg))[:len(x_pos)]]
    x = torch.cat([x_pos, x_neg])
    y = torch.cat([torch.ones(len(x_pos), dtype=torch.int), torch.zeros(len(x_neg), dtype=torch.int)])
    order = torch.randperm(len(x))
    return x[order], y[order]


def labelled(sets: dict[str, list[int]], name: str) -> tuple[list[int], torch.Tensor]:
    """Example indices of set `name` and its negatives with 1 / 0 labels (accuracy ignores order)."""
    pos, neg = sets[name], sets[name + "_neg"]
    return pos + neg, torch.cat([torch.ones(len(pos), dtype=torch.int), torch.zeros(len(neg), dtype=torch.int)])


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, batch_size: int) -> float:
    """`probe_training.test_probe_gpu`: logits in the probe's dtype, in batches, > 0 is class 1."""
    with torch.no_grad():
        correct = [((torch.nn.functional.linear(x[i:i + batch_size].to(w.dtype), w[None], b).squeeze(-1) > 0).long()
                    == y[i:i + batch_size]).float() for i in range(0, len(y), batch_size)]
    return torch.cat(correct).mean().item()


def train_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                batch_size: int = 16, epochs: int = 20, lr: float = 1e-3, l1_penalty: float = 1e-3,
                patience: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """`probe_training.train_probe_gpu`, step for step (same draws from torch's global generator):
    returns the weights [d] and bias [1] of the epoch with the best test accuracy."""
    probe = torch.nn.Linear(x_train.shape[1], 1, bias=True, dtype=x_train.dtype)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr)
    criterion = torch.nn.BCEWithLogitsLoss()
    best_acc, best, stale = 0.0, None, 0
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(x_train))
            for i in range(0, len(x_train), batch_size):
                batch = order[i:i + batch_size]
                loss = criterion(probe(x_train[batch]).squeeze(-1), y_train[batch].to(x_train.dtype))
                loss = loss + l1_penalty * torch.sum(torch.abs(probe.weight))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            acc = probe_accuracy(x_test, y_test, probe.weight.detach()[0], probe.bias.detach(), batch_size)
            if acc > best_acc:
                best_acc, best, stale = acc, (probe.weight.detach()[0].clone(), probe.bias.detach().clone()), 0
            else:
                stale += 1
            if stale >= patience:
                break
    # SAEBench asserts some epoch beat accuracy 0; a probe that never did keeps its last weights
    return best if best is not None else (probe.weight.detach()[0].clone(), probe.bias.detach().clone())


def probe_seed(seed: int, pair: tuple[str, str], probe: str) -> int:
    return zlib.crc32(f"{seed}\0{pair[0]}\0{pair[1]}\0{probe}".encode())


@small_ops()
def train_llm_probes(pooled_llm: torch.Tensor, train_sets: dict, test_sets: dict, seed: int, pair: tuple[str, str],
                     cfg: SCRConfig) -> dict:
    """The three LLM probes of one (pair, seed) and SAEBench's `llm_test_accuracies` that SCR uses
    (JSON-able, memoised: they do not depend on the checkpoint)."""
    probes = {}
    for name in PROBES:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(probe_seed(seed, pair, name))
            xtr, ytr = prepare_probe_data(pooled_llm, train_sets[name], train_sets[name + "_neg"])
            xte, yte = prepare_probe_data(pooled_llm, test_sets[name], test_sets[name + "_neg"])
            probes[name] = train_probe(xtr, ytr, xte, yte, cfg.probe_train_batch_size, cfg.probe_epochs, cfg.probe_lr,
                                       cfg.probe_l1_penalty, cfg.early_stopping_patience)

    def accuracy(probe: str, on: str) -> float:
        idx, y = labelled(test_sets, on)
        return probe_accuracy(pooled_llm[idx], y, *probes[probe], cfg.probe_test_batch_size)

    return {"probes": {name: {"w": w.tolist(), "b": b.item()} for name, (w, b) in probes.items()},
            "accuracy": {"column1": accuracy("column1", "column1"), "column2": accuracy("column2", "column2"),
                         "biased": accuracy("biased", "biased"), "biased_on_column1": accuracy("biased", "column1"),
                         "biased_on_column2": accuracy("biased", "column2")}}


# ---- latent effects, ablation and the score -------------------------------------------------------

def scr_latent_effects(f_pos: torch.Tensor, f_neg: torch.Tensor, probe_w: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """[d_sae] |(mean pooled latent on positives − on negatives) × (decoder row · probe weight)|."""
    diff = f_pos.double().mean(0) - f_neg.double().mean(0)
    return (diff * (W_dec.double() @ probe_w.double())).abs()


@torch.no_grad()
def padding_leak(sae, cache) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(0) [d_sae], padded positions / real tokens per example [n]): what SAEBench's ablation adds
    at the zeroed BOS / padding positions of each example, in pooled form."""
    p = sae.W_enc
    f0 = sae.encode(torch.zeros(1, sae.d_in, dtype=p.dtype, device=p.device))[0].double().cpu()
    real = []
    for i in range(cache.spec.n_shards):
        with safe_open(str(cache.shard_path(i)), framework="pt") as shard:
            real.append(shard.get_tensor("mask").bool().sum(1))
    real = torch.cat(real).double()
    return f0, (cache.spec.ctx_len - real) / real.clamp_min(1)


def ablated_pooled(pooled_llm: torch.Tensor, pooled_f: torch.Tensor, W_dec: torch.Tensor, latents: torch.Tensor,
                   leak: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Pooled activations with `latents` ablated, the SAE error kept (`ablate_pooled`); with `leak`
    (f(0), padding/real ratio of these examples) also SAEBench's edit of the padding positions."""
    if leak is None or latents.numel() == 0:
        return ablate_pooled(pooled_llm, pooled_f, W_dec, latents)
    f0, ratio = leak
    removed = pooled_f[:, latents].double() + ratio.double()[:, None] * f0[latents].double()
    return pooled_llm.double() - removed @ W_dec[latents].double()


def scr_score(changed: float, original: float, clean: float) -> float:
    """The share of the gap to the clean probe that ablation closed (0 when there is no gap)."""
    return 0.0 if clean - original < 0.001 else (changed - original) / (clean - original)


def scr_from_accuracies(changed: dict[int, dict[int, float]], acc: dict[str, float]) -> tuple[dict[str, float], int]:
    """SAEBench's `get_scr_plotting_dict`: `changed[dir][N]` is the biased probe's accuracy after
    ablating N latents, `acc` the LLM probes' accuracies. Returns the metrics and the direction
    `scr_metric` uses: dir1 when the biased probe is worse on column-1 data, else dir2 (SAEBench's
    description; its code defines no scr_metric when the two accuracies are equal)."""
    metrics = {}
    for direction, _, measured in DIRECTIONS:
        for n, value in changed[direction].items():
            metrics[f"scr_dir{direction}_threshold_{n}"] = scr_score(value, acc[f"biased_on_{measured}"], acc[measured])
    direction = 1 if acc["biased_on_column1"] < acc["biased_on_column2"] else 2
    for n in changed[direction]:
        metrics[f"scr_metric_threshold_{n}"] = metrics[f"scr_dir{direction}_threshold_{n}"]
    return metrics, direction


@small_ops()
def scr_scores(pooled_llm: torch.Tensor, pooled_f: torch.Tensor, W_dec: torch.Tensor, train_sets: dict, test_sets: dict,
               llm: dict, n_values: list[int], test_batch_size: int = 500,
               leak: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """SCR of one (pair, seed) for one checkpoint. Returns {"metrics": scr_dir1/dir2/metric_threshold_N,
    "direction": the dir scr_metric uses, "latents": {dir: top latents by effect}}."""
    probes = {name: (torch.tensor(p["w"], dtype=torch.float32), torch.tensor([p["b"]], dtype=torch.float32))
              for name, p in llm["probes"].items()}
    changed: dict[int, dict[int, float]] = {}
    latents = {}
    for direction, ablated, measured in DIRECTIONS:
        effects = scr_latent_effects(pooled_f[train_sets[ablated]], pooled_f[train_sets[ablated + "_neg"]],
                                     probes[ablated][0], W_dec)
        latents[f"dir{direction}"] = select_top_n(effects, N_LATENTS_RECORDED).tolist()
        idx, y = labelled(test_sets, measured)
        rows_leak = None if leak is None else (leak[0], leak[1][idx])
        changed[direction] = {}
        for n in n_values:
            edited = ablated_pooled(pooled_llm[idx], pooled_f[idx], W_dec, select_top_n(effects, n), rows_leak)
            changed[direction][n] = probe_accuracy(edited.float(), y, *probes["biased"], test_batch_size)
    metrics, direction = scr_from_accuracies(changed, llm["accuracy"])
    return {"metrics": metrics, "direction": direction, "latents": latents}
