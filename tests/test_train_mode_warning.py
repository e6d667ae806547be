"""Training starts with every module in training mode except the frozen BatchNorm of the base: Lightning's
"modules in eval mode" warning (raised before ``on_train_start``) is filtered for exactly that case until training
starts, with a log line saying why, and kept for anything else left in eval mode, in later fits of the process too."""

import logging
import warnings

import lightning as L
import torch
from conftest import build_vlm, make_batch
from torch import nn

from mmpeft.adapters import AdapterSpec
from mmpeft.module import VLMModule

ROWS = [(1, "what is it?", "a cat"), (1, "colour?", "red")]


def fit_once(module: VLMModule, caught: list, root) -> list[str]:
    """One real training step through Lightning; the warnings about modules in eval mode it added to ``caught``
    (the list of an enclosing ``warnings.catch_warnings(record=True)``, so filters persist from fit to fit as in
    a process that fits twice)."""
    batch = make_batch(module.vlm, ROWS)
    batch.update(has_image=torch.ones(2, dtype=torch.bool), num_images=torch.ones(2, dtype=torch.long))
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=root)  # the module writes trainability.md there
    before = len(caught)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))
    return [str(w.message) for w in caught[before:] if "in eval mode at the start of training" in str(w.message)]


def test_frozen_batchnorm_only_gives_a_log_line_not_the_warning(tiny, caplog, tmp_path):
    vlm = build_vlm(tiny, vision="timm_cnn", llm_spec=AdapterSpec("lora", r=2, alpha=4, dropout=0.1))
    module = VLMModule(vlm)
    assert not vlm.llm.training, "towers are built in eval mode"
    with caplog.at_level(logging.INFO, logger="mmpeft.training_mode"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fit_once(module, caught, tmp_path) == []
    assert "frozen BatchNorm layers stay in eval mode" in caplog.text
    norms = [m for m in vlm.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms), "the base's BatchNorm stayed frozen"
    assert vlm.llm.training and any(isinstance(m, nn.Dropout) and m.training for m in vlm.llm.modules())


def test_anything_else_in_eval_mode_keeps_the_warning_in_a_later_fit_too(tiny, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fit_once(VLMModule(build_vlm(tiny, vision="timm_cnn")), caught, tmp_path / "a") == []
        assert not [f for f in warnings.filters if f[1] is not None and "eval mode" in f[1].pattern], \
            "the filter is gone once training started"
        stray = VLMModule(build_vlm(tiny, vision="timm_cnn"))
        stray.stray = nn.Dropout(0.5).eval()  # not part of the VLM: vlm.train() does not reach it
        warned = fit_once(stray, caught, tmp_path / "b")
    assert len(warned) == 1 and warned[0].startswith("Found ")
