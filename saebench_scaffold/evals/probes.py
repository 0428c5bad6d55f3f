"""Probe helpers shared by the probing tasks, absorption and autointerp: mean-difference latent
ranking, SAEBench's logistic-regression probe, top-n selection, and single-threaded BLAS for the many
small operations they run."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch


def mean_diff_order(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Features by decreasing |mean over positives − mean over negatives| (ties: lower index first)."""
    xn, yn = x.numpy(), y.numpy()
    diff = np.abs(xn[yn == 1].mean(0, dtype=np.float64) - xn[yn == 0].mean(0, dtype=np.float64))
    return torch.from_numpy(np.argsort(-diff, kind="stable"))


def top_k_mean_diff(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k features with the largest |mean over positives − mean over negatives|."""
    return mean_diff_order(x, y)[:k]


_CONTROLLER = None


def _blas_controller():
    """One threadpoolctl controller (discovering the BLAS libraries costs milliseconds per call)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        import sklearn.linear_model  # noqa: F401 - load scipy's and sklearn's BLAS before discovery
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


@contextmanager
def small_ops():
    """Single-threaded torch and BLAS for the many small probe and ablation operations: on a
    shared 2-core machine the thread pools made them 20-50x slower. The SAE encoder pass (large
    matrix products) stays outside and keeps every thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _blas_controller().limit(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(n)


@dataclass
class LinearProbe:
    """A logistic-regression probe in the raw feature space: logit = x · w + b."""

    w: torch.Tensor  # [d] float64
    b: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() @ self.w + self.b

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return ((self.logits(x) > 0).long() == y).double().mean().item()


def fit_probe(x: torch.Tensor, y: torch.Tensor, C: float = 1.0, max_iter: int = 1000, standardize: bool = False) -> LinearProbe:
    """sklearn LogisticRegression (L2, lbfgs) as SAEBench trains its probes (raw features, no
    scaling, max_iter 1000). With `standardize`, features are z-scored on the training data and the
    weights folded back into the raw space. BLAS runs single-threaded: these problems are small, and
    OpenBLAS' thread pool on a shared 2-core machine made them ~50x slower."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    xn = x.double().numpy()
    yn = y.numpy()
    if len(np.unique(yn)) < 2:
        raise ValueError("a probe needs both labels in its training data")
    mean = np.zeros(xn.shape[1])
    scale = np.ones(xn.shape[1])
    if standardize:
        mean = xn.mean(0)
        scale = xn.std(0)
        scale[scale == 0] = 1.0
        xn = (xn - mean) / scale
    with warnings.catch_warnings(), _blas_controller().limit(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=max_iter)
        clf.fit(xn, yn)
    w = clf.coef_[0] / scale
    b = float(clf.intercept_[0] - (w * mean).sum())
    return LinearProbe(torch.from_numpy(w), b)



def select_top_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the top-n scores among latents with a non-zero score (SAEBench's selection)."""
    nonzero = torch.nonzero(scores).flatten()
    if nonzero.numel() == 0:
        return nonzero
    return nonzero[torch.topk(scores[nonzero], min(n, nonzero.numel())).indices]

