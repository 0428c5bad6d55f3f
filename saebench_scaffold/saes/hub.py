"""Checkpoints by name instead of by folder.

  sae_lens:RELEASE/SAE_ID     a SAELens pretrained release and SAE id, as SAEBench users select them
                              (`sae_lens:gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical`);
                              loaded by `sae_lens.SAE.from_pretrained_with_cfg_and_sparsity`, so every
                              release SAELens can convert works, then turned into our SAE class.
  hf:ORG/REPO[/SUBFOLDER]     a folder of a Hugging Face model repo in any format `load_sae` detects.

Both go through the Hugging Face cache (HF_HUB_CACHE), so they work offline (HF_HUB_OFFLINE=1) once
fetched. RELEASE and ORG/REPO contain no further '/'; the rest is the SAE id / subfolder.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..settings import UserError
from .base import SAE
from .loaders import load_sae, saelens_to_sae

SAE_LENS_PREFIX = "sae_lens:"
HF_PREFIX = "hf:"
_OFFLINE_HINT = "not in the local Hugging Face cache and the hub cannot be reached (offline?)"


@dataclass
class NamedCheckpoint:
    name: str
    """Folder-safe name: results go to OUTPUT_DIR/<name>/<task>.json."""
    sae: SAE
    folder: Path | None = None
    """Local folder the SAE was read from (hf:), for the file checksum; None for sae_lens:."""
    sha256: str = ""
    sae_lens_release_id: str | None = None
    sae_lens_id: str | None = None


def is_named(spec: str) -> bool:
    return spec.startswith((SAE_LENS_PREFIX, HF_PREFIX))


def load_named(spec: str) -> NamedCheckpoint:
    return load_sae_lens(spec) if spec.startswith(SAE_LENS_PREFIX) else load_hf(spec)


def _split(spec: str, prefix: str, head_parts: int, usage: str) -> tuple[str, str]:
    """`prefix` + head (head_parts '/'-separated parts) + optional '/rest'."""
    parts = spec[len(prefix):].split("/", head_parts)
    if len(parts) < head_parts or not all(parts[:head_parts]):
        raise UserError(f"{spec!r}: expected {usage}")
    return "/".join(parts[:head_parts]), (parts[head_parts] if len(parts) > head_parts else "")


def _safe_name(*parts: str) -> str:
    return "__".join(p.strip("/").replace("/", "__") for p in parts if p)


# ---- sae_lens:RELEASE/SAE_ID --------------------------------------------------------------------

def load_sae_lens(spec: str) -> NamedCheckpoint:
    release, sae_id = _split(spec, SAE_LENS_PREFIX, 1, "sae_lens:RELEASE/SAE_ID (e.g. sae_lens:gpt2-small-res-jb/blocks.8.hook_resid_pre)")
    if not sae_id:
        raise UserError(f"{spec!r}: no SAE id after the release (sae_lens:RELEASE/SAE_ID)")
    from huggingface_hub.errors import LocalEntryNotFoundError
    from sae_lens import SAE as SAELensSAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = difflib.get_close_matches(release, directory, n=3)
        raise UserError(f"unknown SAELens release {release!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    entry = directory[release]
    if sae_id not in entry.saes_map:
        ids = list(entry.saes_map)
        raise UserError(f"SAELens release {release!r} has no SAE {sae_id!r}; it has {len(ids)}, e.g. {', '.join(ids[:3])}")
    try:
        sl_sae, cfg_dict, _sparsity = SAELensSAE.from_pretrained_with_cfg_and_sparsity(release, sae_id, device="cpu")
    except LocalEntryNotFoundError as err:
        raise UserError(f"SAELens release {release!r} SAE {sae_id!r} (hub repo {entry.repo_id}): {_OFFLINE_HINT}") from err
    except OSError as err:
        raise UserError(f"cannot fetch SAELens release {release!r} SAE {sae_id!r} from {entry.repo_id}: {str(err).splitlines()[0]}") from err
    tensors = {k: v.detach().float().cpu() for k, v in sl_sae.state_dict().items()}
    sae = saelens_to_sae(cfg_dict, tensors, spec)
    sae.cfg.extra.update(source_format="saelens", sae_lens_release=release, sae_lens_repo_id=entry.repo_id)
    factor = (getattr(entry, "norm_scaling_factor", None) or {}).get(sae_id)
    # The directory gives a factor for the SAEs trained with expected_average_only_in, and from_pretrained
    # folded it before we saw the weights (its cfg_dict then says "none"): record it.
    if factor is not None and sae.cfg.normalize_activations == "none" and "folded" not in sae.cfg.extra:
        sae.cfg.extra["folded"] = {"normalize_activations": "expected_average_only_in", "scaling_factor": factor,
                                   "scaling_factor_source": "SAELens pretrained directory (folded by from_pretrained)"}
    sae.eval()
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].contiguous().numpy().tobytes())
    return NamedCheckpoint(_safe_name(release, sae_id), sae, None, digest.hexdigest(), release, sae_id)


# ---- hf:ORG/REPO[/SUBFOLDER] --------------------------------------------------------------------

def load_hf(spec: str) -> NamedCheckpoint:
    folder = fetch_hf_folder(spec)
    return NamedCheckpoint(_safe_name(*_split(spec, HF_PREFIX, 2, "hf:ORG/REPO[/SUBFOLDER]")), load_sae(folder), folder)


def fetch_hf_folder(spec: str) -> Path:
    """Local path of the repo folder (downloaded into the HF cache if needed; only that subfolder)."""
    repo_id, subfolder = _split(spec, HF_PREFIX, 2, "hf:ORG/REPO[/SUBFOLDER] (e.g. hf:my-org/my-saes/layer_8)")
    subfolder = subfolder.strip("/")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        root = Path(snapshot_download(repo_id, allow_patterns=[f"{subfolder}/*"] if subfolder else None))
    except LocalEntryNotFoundError as err:
        raise UserError(f"hub repo {repo_id}: {_OFFLINE_HINT}") from err
    except RepositoryNotFoundError as err:
        raise UserError(f"hub repo {repo_id} does not exist (or is private)") from err
    except OSError as err:
        raise UserError(f"cannot fetch hub repo {repo_id}: {str(err).splitlines()[0]}") from err
    folder = root / subfolder if subfolder else root
    if not folder.is_dir():
        # Offline, the cache answers with whatever snapshot it has, which may lack this folder.
        raise UserError(f"hub repo {repo_id} has no folder {subfolder!r} in the local cache ({root}); "
                        "fetch it online once, or check the name")
    return folder
