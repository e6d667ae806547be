"""Training starts with every module in training mode except the frozen BatchNorm of the base: Lightning's
"modules in eval mode" warning (raised before ``on_train_start``) is silenced for exactly that case, with a log line
saying why, and kept for anything else left in eval mode."""

import logging
import warnings

from conftest import build_vlm
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

from mmpeft.adapters import AdapterSpec
from mmpeft.module import VLMModule

LIGHTNING_MESSAGE = ("Found 3 module(s) in eval mode at the start of training. This may lead to unexpected behavior "
                     "during training. If this is intentional, you can ignore this warning.")


def warned_after_setup(module: VLMModule) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module._train_mode_before_lightning_checks()
        warnings.warn(LIGHTNING_MESSAGE, PossibleUserWarning, stacklevel=1)
        warnings.warn("another warning", PossibleUserWarning, stacklevel=1)
    return [str(w.message) for w in caught]


def test_frozen_batchnorm_only_silences_the_warning_and_says_why(tiny, caplog):
    vlm = build_vlm(tiny, vision="timm_cnn", llm_spec=AdapterSpec("lora", r=2, alpha=4, dropout=0.1))
    module = VLMModule(vlm)
    assert not vlm.llm.training, "towers are built in eval mode"
    with caplog.at_level(logging.INFO, logger="mmpeft.module"):
        messages = warned_after_setup(module)
    still_eval = [m for m in module.modules() if not m.training]
    assert still_eval and all(
        any(m is sub for norm in module.modules() if isinstance(norm, nn.modules.batchnorm._BatchNorm)
            for sub in norm.modules()) for m in still_eval), "only BatchNorm layers (and what they hold) stay in eval"
    assert vlm.llm.training and any(isinstance(m, nn.Dropout) and m.training for m in vlm.llm.modules())
    assert messages == ["another warning"]
    assert "frozen BatchNorm layers stay in eval mode" in caplog.text


def test_anything_else_in_eval_mode_keeps_lightnings_warning(tiny):
    module = VLMModule(build_vlm(tiny, vision="timm_cnn"))
    module.stray = nn.Dropout(0.5).eval()  # not part of the VLM: vlm.train() does not reach it
    assert warned_after_setup(module) == [LIGHTNING_MESSAGE, "another warning"]
