"""The training state is read with weights_only=True: a state file that pickles a callable is refused
in one line without running it, and a real state still resumes (test_trainer.py checks
resumed training ends at the same weights)."""

import pytest
import torch

from saebench_scaffold.settings import UserError
from saebench_scaffold.training.checkpoint import STATE_FILE, load_state
from saebench_scaffold.training.data import tensor_source
from saebench_scaffold.training.recipe import TrainRecipe
from saebench_scaffold.training.trainer import train

from .conftest import synthetic_acts


class _RunsCode:
    """Unpickling this calls open(marker, "w"): proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _recipe(tmp_path, total_steps):
    return TrainRecipe(d_sae=32, k=4, batch_size=64, total_tokens=64 * total_steps, warmup_steps=1, checkpoint_every=2,
                       threshold_start_step=1, dead_tokens=64 * 4, output_dir=str(tmp_path / "run")).validate()


def test_state_with_a_pickled_callable_is_refused_and_not_run(tmp_path):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    torch.save({"step": 3, "payload": _RunsCode(marker)}, run / STATE_FILE)
    with pytest.raises(UserError) as info:
        load_state(run)
    msg = str(info.value)
    assert "\n" not in msg and "reference to io.open" in msg and "not loaded" in msg and STATE_FILE in msg
    assert not marker.exists()
    with pytest.raises(UserError, match="could run code"):  # the train command refuses it the same way
        train(_recipe(tmp_path, 4), source=tensor_source(synthetic_acts(1024)), progress=False)
    assert not marker.exists()
    (run / STATE_FILE).unlink()  # after removing it, a normal run works
    train(_recipe(tmp_path, 4), source=tensor_source(synthetic_acts(1024)), progress=False)


def test_real_state_loads_with_weights_only_and_resumes(tmp_path):
    src = tensor_source(synthetic_acts(1024))
    train(_recipe(tmp_path, 4), source=src, progress=False)
    state = load_state(tmp_path / "run")
    assert state["step"] == 4 and isinstance(state["optimizer"], dict) and state["rng"].dtype == torch.uint8
    train(_recipe(tmp_path, 4), source=src, progress=False)  # resumes (restores optimizer, RNG) at the end
    assert load_state(tmp_path / "run")["step"] == 4
