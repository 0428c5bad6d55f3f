"""Importing a peer (SAEBench, SAELens) for the tests that compare us with its own code.

sae-bench is installed `--no-deps` (scripts/setup.sh), so its import can break without pip noticing.
`peer_import` names the peer when it cannot import it: the test module skips saying which peer is
missing and why, and where $SAEBENCH_REQUIRE_PEERS=1 (`.ci/run` sets it) the module fails instead,
so CI can never go green with the equality tests quietly skipped."""

from __future__ import annotations

import importlib
import os

import pytest

os.environ.setdefault("JAXTYPING_DISABLE", "1")  # sae-bench's runtime shape checks

REQUIRE_ENV = "SAEBENCH_REQUIRE_PEERS"
PEERS = {"sae_bench": "sae-bench 0.6.0 (scripts/setup.sh installs it --no-deps)", "sae_lens": "sae-lens"}


def peer_import(module: str):
    """`module` imported, or this test module skipped (failed under $SAEBENCH_REQUIRE_PEERS=1) naming the peer."""
    try:
        return importlib.import_module(module)
    except Exception as err:  # a broken install raises more than ImportError (a missing dependency's own errors)
        top = module.split(".")[0]
        why = f"peer {PEERS.get(top, top)} is missing or broken: import {module} failed ({type(err).__name__}: {err})"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{why}; ${REQUIRE_ENV}=1 requires the peers", pytrace=False)
    pytest.skip(why, allow_module_level=True)
