"""Checkpoints: the training state (to resume) and the SAE itself (to use), both written atomically.

`trainer_state.pt` holds everything the next step depends on — weights in the training (scaled)
space, Adam moments, the step counter (which fixes the data position, see data.py), dead-latent
counters, threshold, input scale, elapsed time and RNG states. It is written to a temporary file and
renamed over the old one, so a kill or a full disk at any moment leaves the previous complete state.
It holds only tensors and plain values and is read with `weights_only=True`: a state file from a
shared run folder cannot run code on resume (a full unpickler would call whatever the file names).
`sae/` is the usable checkpoint (cfg.json + sae.safetensors, raw-activation space), written by
SAE.save, which is atomic in the same way.
"""

from __future__ import annotations

import copy
import os
import pickle
import re
from pathlib import Path

import torch

from ..settings import UserError

STATE_FILE = "trainer_state.pt"
SAE_DIR = "sae"


def save_state(out: Path, state: dict) -> None:
    path = out / STATE_FILE
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"could not write checkpoint {path} ({err}); the previous checkpoint is intact") from err


def load_state(out: Path) -> dict | None:
    path = out / STATE_FILE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses any object that is not a tensor or plain value (e.g. a pickled callable).
        named = re.search(r"GLOBAL (\S+)", str(err))
        what = f"a reference to {named.group(1)}" if named else "an object"
        raise UserError(f"training state {path} holds {what}, not only tensors and plain values; not loaded, "
                        "as it could run code. Delete it to start over") from err
    except Exception as err:
        raise UserError(f"training state {path} is unreadable ({err}); delete it to start over") from err


def folded_copy(sae, scale: float):
    """The SAE as a function of raw activations. Training saw x·scale; every part of the model is
    linear or positively homogeneous in (x, b_dec, b_enc, threshold) — ReLU, BatchTopK order, the
    threshold test, the scaffold — so dividing b_dec, b_enc and threshold by `scale` gives outputs
    and latents equal to the scaled model's divided by `scale`, with decoder rows still unit-norm."""
    out = copy.deepcopy(sae).cpu().float()
    with torch.no_grad():
        out.b_dec /= scale
        out.b_enc /= scale
        out.threshold /= scale
    return out


def save_sae(out: Path, sae, scale: float, dtype: str) -> Path:
    folder = out / SAE_DIR
    try:
        return folded_copy(sae, scale).save(folder, dtype=dtype)
    except OSError as err:
        for tmp in out.glob(SAE_DIR + ".tmp*"):
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not write checkpoint {folder} ({err}); the previous checkpoint is intact") from err
