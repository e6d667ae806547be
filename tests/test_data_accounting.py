"""The loaders' bookkeeping lives in one callback (``mmpeft.callbacks.data_accounting.DataAccounting``), not in
``VLMModule``; the module brings it to every Trainer, and a checkpoint stores the position of the batches trained."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import lightning as L
import torch
from conftest import build_vlm
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from shard_damage import write_dir

from mmpeft.callbacks.data_accounting import DataAccounting
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.collate import Collator
from mmpeft.data.loader import VLLoader, VLStream
from mmpeft.data.pipeline import SampleProcessor, ShardRows, SkipCounts
from mmpeft.module import VLMModule

MODULE = Path(__file__).parents[1] / "mmpeft" / "module.py"
LOADER_NAMES = {"train_dataloader", "val_dataloaders", "test_dataloaders", "mark_consumed", "partial_stats",
                "finish_eval_pass", "history"}


def test_the_module_does_not_reach_into_the_loaders():
    tree = ast.parse(MODULE.read_text())
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    used |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    used |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert used & LOADER_NAMES == set(), "module.py touches the loaders: that is DataAccounting's job"


class RecordPositions(Callback):
    """The ``(epoch, index)`` of every trained batch, in order."""

    def __init__(self):
        self.trained: list[tuple[int, int]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.trained.append((int(batch["epoch"]), int(batch["index"])))


def loader(vlm, directory: Path, rows: int, name: str, allow_partial: bool | None = None) -> VLLoader:
    renderer = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens)
    skips = SkipCounts()
    images = ShardRows(write_dir(directory, rows, 5), SampleProcessor(renderer, vlm.vision.image_transform), skips,
                       shuffle=False)
    return VLLoader(VLStream(images, None, 0.0, 4, Collator(vlm.llm.tokenizer.pad_token_id)), skips, name=name,
                    allow_partial=allow_partial)


def test_a_trainer_built_without_the_cli_gets_data_accounting_before_its_checkpoints(tiny, tmp_path):
    """10 training rows in batches of 4: 3 batches an epoch; 5 steps stop inside epoch 1."""
    vlm = build_vlm(tiny)
    train, val = loader(vlm, tmp_path / "train", 10, "train"), loader(vlm, tmp_path / "val", 6, "val", False)
    recorder = RecordPositions()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=1, save_top_k=-1)
    trainer = L.Trainer(accelerator="cpu", max_steps=5, callbacks=[checkpoints, recorder], num_sanity_val_steps=0,
                        logger=CSVLogger(tmp_path, name="", version=""), default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(VLMModule(vlm), train_dataloaders=train, val_dataloaders=val)

    kinds = [type(c) for c in trainer.callbacks]
    assert kinds.count(DataAccounting) == 1, "configure_callbacks brings it to a Trainer that did not name it"
    first_checkpoint = min((i for i, c in enumerate(trainer.callbacks) if isinstance(c, Checkpoint)),
                           default=len(kinds))
    assert kinds.index(DataAccounting) < first_checkpoint, "Lightning runs checkpoints after the data position"

    assert recorder.trained == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    for step in range(1, 6):
        saved = torch.load(tmp_path / "ckpt" / f"step={step}.ckpt", weights_only=False)
        position = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
        after = recorder.trained[step] if step < 5 else (1, 2)  # where training goes on: the next batch
        assert position == {"epoch": after[0], "next_batch": after[1]}, f"step {step}"

    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    epoch_end = [r for r in rows if r.get("data/rows")]
    assert [(int(r["step"]), float(r["data/rows"])) for r in epoch_end][0] == (2, 10.0), "epoch 0, read to its end"
    assert len(epoch_end) == 2 and int(epoch_end[1]["step"]) == 5 and float(epoch_end[1]["data/rows"]) >= 8, \
        "the partial epoch 1 at the last step (two batches trained, prefetch reads ahead)"
    assert [float(r["val/data/rows"]) for r in rows if r.get("val/data/rows")] == [6.0], \
        "one validation: at the end of epoch 0 (epoch 1 stops at max_steps)"
