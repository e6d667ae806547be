"""Data parallelism on CPU (gloo, 2 processes): mixed batches, equivalence with one process, sharding, resume."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import MIXED_ROWS, build_vlm, make_batch

from mmpeft.adapters import AdapterSpec
from mmpeft.guards import L2SP, KLToBase, Replay
from mmpeft.module import VLMModule

ROOT = Path(__file__).parents[1]


class RankModule(VLMModule):
    """VLMModule as one rank of a 2-process group, without a Trainer (for the equivalence check)."""

    world = 1

    @property
    def world_size(self) -> int:
        return self.world

    def _global_count(self, count: int) -> int:
        total = torch.tensor(float(count))
        dist.all_reduce(total)
        return int(total)


def global_batch(vlm):
    rows = MIXED_ROWS + [(0, " What is 2 plus 3?", " five")]  # image, text, image, text
    return make_batch(vlm, rows, image_flags=True)


def build(tiny, world):
    vlm = build_vlm(tiny, vision_spec=AdapterSpec("lora", init_weights=False),
                    llm_spec=AdapterSpec("lora", init_weights=False))
    module = RankModule(vlm, guards=[Replay(), KLToBase(rows="all"), L2SP(weight=0.1)])
    module.world = world
    vlm.run_vision_always = world > 1
    for g in module.guards:
        g.setup(vlm)
    return module


def rank_worker(rank, tiny, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    module = build(tiny, world=2)
    from mmpeft.data.collate import select_rows

    batch = global_batch(module.vlm)
    # rank 0: the two text-only rows; rank 1: the two image rows
    mine = ~batch["has_image"] if rank == 0 else batch["has_image"]
    losses = module._losses(select_rows(batch, mine))
    losses["loss"].backward()
    grads = {}
    for name, p in module.vlm.named_parameters():
        if p.requires_grad:
            g = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(g)
            grads[name] = g / 2  # what DDP does
    loss = losses["loss"].detach().clone()
    dist.all_reduce(loss)
    if rank == 0:
        torch.save({"loss": loss / 2, "grads": grads}, out)
    dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_same_global_batch(tiny, tmp_path):
    out = tmp_path / "ranks.pt"
    mp.spawn(rank_worker, args=(tiny, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    torch.manual_seed(0)
    single = build(tiny, world=1)
    losses = single._losses(global_batch(single.vlm))
    losses["loss"].backward()
    ranks = torch.load(out, weights_only=True)
    torch.testing.assert_close(ranks["loss"], losses["loss"].detach(), rtol=1e-5, atol=1e-6)
    for name, p in single.vlm.named_parameters():
        if p.requires_grad:
            expected = p.grad if p.grad is not None else torch.zeros_like(p)
            torch.testing.assert_close(ranks["grads"][name], expected, rtol=1e-4, atol=1e-7, msg=name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory):
    """Two shards: one of text-only rows, one of image rows, so each rank sees only one kind per epoch."""
    from mmpeft.apps.tiny import save_tiny_llm, save_tiny_open_clip, save_tiny_shards

    root = tmp_path_factory.mktemp("ddp")
    save_tiny_llm(root / "llm")
    save_tiny_open_clip(root / "open_clip")
    save_tiny_shards(root / "data", image_samples=8, text_samples=8, samples_per_shard=8)
    return root


def run_cli(root: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "mmpeft.apps.main", "fit",
            "--config", "configs/trainer/cpu.yaml", "--config", "configs/trainer/ddp_cpu.yaml",
            "--config", "configs/model/tiny.yaml", "--config", "configs/peft/lora_both.yaml",
            f"--model.vlm.llm.init_args.name={root / 'llm'}",
            f"--model.vlm.vision.init_args.name=local-dir:{root / 'open_clip'}",
            f"--data.train_shards=[{root / 'data' / 'train'}, {root / 'data' / 'text'}]",
            "--data.batch_size=4", "--data.num_workers=0", "--data.shuffle_buffer=1", "--data.max_length=128",
            "--config", "configs/guard/replay.yaml", f"--data.text_shards={root / 'data' / 'text'}",
            "--data.text_ratio=0.0", "--model.guards.init_args.weight=1.0",
            f"--run_dir={run_dir}", "--trainer.limit_val_batches=0", "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false", "--trainer.callbacks+=lightning_helpers.RecordRanks",
            f"--trainer.callbacks.directory={run_dir / 'ranks'}", *extra]
    env = {**os.environ, "MASTER_PORT": str(free_port()), "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


# 9 steps, a multiple of 3: last.ckpt holds the final weights, which the sync check compares with the ranks' own
# (with 8 steps it would be step 6's); step 3 is mid-epoch (2 batches an epoch per rank)
FULL_RUN = ("--trainer.max_steps=9", "--checkpoint_every_n_steps=3")


@pytest.fixture(scope="module")
def full_run(ddp_data, tmp_path_factory) -> Path:
    """One uninterrupted DDP run (9 steps, 4.5 epochs, a checkpoint every 3 steps), shared by the sync / sharding
    checks and, as the reference, by the resume check: each DDP launch costs two interpreter starts."""
    run = tmp_path_factory.mktemp("ddp_full") / "run"
    result = run_cli(ddp_data, run, *FULL_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_ddp_mixed_ranks_stay_in_sync_and_never_share_samples(full_run):
    run = full_run
    ranks = [json.loads((run / "ranks" / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["params"] == ranks[1]["params"], "parameters identical across ranks after training"
    for epoch in {e for r in ranks for e in r["ids"]}:
        seen = [set(r["ids"].get(epoch, [])) for r in ranks]
        assert not seen[0] & seen[1], f"epoch {epoch}: a sample was read by both ranks"
    # in every epoch one rank held only text-only rows and the other only image rows
    for epoch in ranks[0]["kinds"]:
        assert sorted(tuple(sorted(set(r["kinds"][epoch]))) for r in ranks) == [("image",), ("text",)], epoch
    # a checkpoint written under DDP loads on one process (evaluation, export)
    from mmpeft.checkpoint import load_pretrained

    model = load_pretrained(run / "checkpoints" / "last.ckpt")
    trained = {n: float(p.detach().double().sum()) for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {n.removeprefix("vlm."): v for n, v in ranks[0]["params"].items()}


def test_ddp_logged_training_loss_is_the_global_batch_loss(full_run):
    """metrics.csv's train/loss under DDP is the loss of the global batch (the mean of the ranks' shares, as DDP
    averages their gradients), not rank 0's own rows: comparable with one process at the global batch size."""
    import csv

    ranks = [json.loads((full_run / "ranks" / f"rank{r}.json").read_text()) for r in range(2)]
    with open(full_run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    logged = {int(r["step"]): float(r["train/loss"]) for r in rows}
    assert sorted(logged) == list(range(9))
    # every step one rank held text-only rows (its batch had no image row): half the ranks, logged as 0.5
    assert [float(r["train/image_free_batches"]) for r in rows] == [0.5] * 9
    for step, value in logged.items():
        shares = [r["losses"][str(step)] for r in ranks]
        assert shares[0] != shares[1], f"step {step}: the ranks' losses differ (one holds text rows, one images)"
        assert value == pytest.approx(sum(shares) / 2, rel=1e-5), f"step {step}"


def test_ddp_resume_reproduces_losses(ddp_data, full_run, tmp_path):
    """Killed after step 5, resumed from the mid-epoch checkpoint of step 3: steps 3-8 as the uninterrupted run's."""
    import csv

    def losses(run):
        with open(run / "metrics.csv") as f:
            return {int(r["step"]): r["train/loss"] for r in csv.DictReader(f) if r.get("train/loss")}

    killed = run_cli(ddp_data, tmp_path / "b", *FULL_RUN,
                     "--trainer.callbacks+=lightning_helpers.KillAtStep", "--trainer.callbacks.step=5")
    assert killed.returncode != 0 and (tmp_path / "b" / "checkpoints" / "step=000003.ckpt").is_dir()
    resumed = run_cli(ddp_data, tmp_path / "b", *FULL_RUN,
                      f"--ckpt_path={tmp_path / 'b' / 'checkpoints' / 'step=000003.ckpt'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference, after = losses(full_run), losses(tmp_path / "b")
    for step in range(3, 9):
        assert after[step] == reference[step], f"step {step}"
