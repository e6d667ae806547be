"""Guards that keep a starting point (L2-SP, EWC on fully trained weights) keep it across a resume.

The start is the run's start: a resumed process (new objects, new ``id()``s) must measure the penalty from the
same weights as the uninterrupted run, not from the resume point.
"""

import csv

import pytest
import torch
from conftest import MIXED_ROWS, build_vlm, make_batch
from lightning_helpers import SimulatedKill
from tiny_fit import fit_args

from mmpeft.adapters import AdapterSpec
from mmpeft.apps.main import cli_main
from mmpeft.apps.tiny import save_tiny_towers
from mmpeft.guards import EWC, L2SP
from mmpeft.guards.base import GuardContext
from mmpeft.guards.ewc import estimate_fisher, save_fisher


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    return save_tiny_towers(tmp_path_factory.mktemp("tiny_guard_resume"))


def metric(run_dir, key):
    with open(run_dir / "metrics.csv") as f:
        return {int(r["step"]): r[key] for r in csv.DictReader(f) if r.get(key)}


def test_l2sp_resumed_full_tuning_gives_the_uninterrupted_penalty(towers, tmp_path):
    common = ["--model.vlm.llm_adapter.method=full", "--config", "configs/guard/l2sp.yaml",
              "--model.guards.init_args.towers=[llm]", "--model.guards.init_args.weight=1.0",
              "--trainer.max_steps=6", "--checkpoint_every_n_steps=3"]
    cli_main(fit_args(towers, tmp_path / "a", *common))
    reference = metric(tmp_path / "a", "train/l2sp")
    assert sorted(reference) == list(range(6)) and float(reference[3]) > 0, "the weights moved by step 3"

    # the killed run's objects stay alive (the traceback holds them), so the resumed process cannot reuse their ids
    with pytest.raises(SimulatedKill) as killed:
        cli_main(fit_args(towers, tmp_path / "b", *common, "--trainer.callbacks+=lightning_helpers.KillAtStep",
                          "--trainer.callbacks.step=4"))
    cli_main(fit_args(towers, tmp_path / "b", *common,
                      f"--ckpt_path={tmp_path / 'b' / 'checkpoints' / 'step=000003.ckpt'}"))
    resumed = metric(tmp_path / "b", "train/l2sp")
    for step in range(3, 6):
        assert resumed[step] == reference[step], f"step {step}: resumed {resumed[step]} != {reference[step]}"
    assert killed.value is not None


def _moved_copy(tiny, spec, source):
    """A fresh model (new objects) holding ``source``'s trained weights: what a resumed process builds."""
    fresh = build_vlm(tiny, llm_spec=spec)
    fresh.load_state_dict(source.state_dict())
    return fresh


def _penalty(guard, vlm):
    batch = make_batch(vlm, MIXED_ROWS)
    out = vlm(**batch)
    return guard(GuardContext(vlm, batch, out, None, None))


@pytest.mark.parametrize("make_guard", ["l2sp", "ewc"])
def test_start_point_state_survives_into_fresh_objects(tiny, tmp_path, make_guard):
    spec = AdapterSpec("full")
    vlm = build_vlm(tiny, llm_spec=spec)
    if make_guard == "ewc":
        fisher, meta = estimate_fisher(vlm, [make_batch(vlm, MIXED_ROWS)])
        path = str(save_fisher(tmp_path / "fisher.safetensors", fisher, meta))
        guard, fresh_guard = EWC(path), EWC(path)
    else:
        guard, fresh_guard = L2SP(towers=["llm"]), L2SP(towers=["llm"])
    guard.setup(vlm)
    with torch.no_grad():
        for p in vlm.llm.model.parameters():
            p.add_(0.01)
    expected = _penalty(guard, vlm)
    assert expected > 0
    state = {k: v.clone() for k, v in guard.state_dict().items()}
    assert all(not k[0].isdigit() for k in state), "keyed by parameter name, not by object id"

    resumed = _moved_copy(tiny, spec, vlm)
    fresh_guard.setup(resumed)  # snapshots the resume point, as VLMModule.on_fit_start does
    fresh_guard.load_state_dict(state)  # then the run's start comes back from the checkpoint
    torch.testing.assert_close(_penalty(fresh_guard, resumed), expected)
