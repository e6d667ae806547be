"""Compiled LLM layers under Lightning's FSDPStrategy (FSDP1), on the CPU in one process.

Between optimizer steps FSDP1 keeps each wrapped layer's gradient in its FlatParameter's ``.grad``, while in the
forward that FlatParameter holds the unsharded weights in ``param_dtype`` (bf16 under ``bf16-mixed``) and the layer's
weights are views of it. Lightning sets gradients to None only after ``training_step``, so a layer that dynamo
recompiles in step 2's forward (here: the reference pass of a batch of a new length) used to fail with
``InternalTorchDynamoError: ... assign a gradient with dtype 'float' to a tensor with grad_dtype 'BFloat16'``, as on
2 H200s (benchmarks/results/distributed_h200x2_fsdp_failure_2026-12-04.log). One process suffices: FSDP1 then runs
NO_SHARD, which still swaps the FlatParameter to bf16 in the forward.
"""

from __future__ import annotations

import os

import lightning
import pytest
import torch
import torch.distributed as dist
from conftest import build_vlm, make_batch
from lightning.pytorch.strategies import FSDPStrategy
from torch.utils.data import DataLoader
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from mmpeft.adapters import AdapterSpec
from mmpeft.guards import KLToBase, Replay
from mmpeft.module import LearningRates, VLMModule

# three batches of different lengths and image / text-only mixes: every step's forward meets a new shape
BATCHES = [
    [(1, " what color is the circle?", " red"), (0, " The capital of France is", " Paris.")],
    [(1, " a much longer question that pads the other rows?", " yes."), (0, " Hi", " there.")],
    [(0, " The capital of Italy is", " Rome."), (1, " what?", " a square"), (1, " and?", " b")],
]


class CPUFSDP(FSDPStrategy):
    """FSDPStrategy on the CPU: Lightning refuses ``FSDPStrategy`` itself with ``accelerator="cpu"`` (not a
    subclass), and passes ``device_id=root_device.index`` (None on the CPU), which FSDP1 refuses without an
    accelerator; this wraps the model as Lightning does, with ``device_id=cpu``."""

    def _setup_model(self, model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                        mixed_precision=self.mixed_precision_config,
                                        sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"),
                                        **self.kwargs)


def _strategy() -> CPUFSDP:
    # the benchmark's FSDP settings (benchmarks/distributed_throughput.py)
    return CPUFSDP(auto_wrap_policy={LlamaDecoderLayer}, use_orig_params=True, sharding_strategy="FULL_SHARD")


def _module(tiny, compile_llm_layers) -> VLMModule:
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", r=4, alpha=8), pack_sequences=True)
    # "eager": dynamo traces each layer (where the failure was) without a backend's compile time
    return VLMModule(vlm, guards=[Replay(), KLToBase()], lr=LearningRates(projector=1e-3, llm=1e-3),
                     gradient_checkpointing=True, compile_llm_layers=compile_llm_layers)


def _batches(vlm) -> list[dict]:
    return [make_batch(vlm, rows, image_flags=True) for rows in BATCHES]


@pytest.fixture
def process_group_cleanup():
    """Lightning starts a (gloo, 1-process) group and sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE, LOCAL_RANK, ...;
    both are undone after the test: the whole environment is restored, since a later test's DDP launch that
    inherited WORLD_SIZE / LOCAL_RANK would take itself for an external launch and wait for ever."""
    environment = dict(os.environ)
    for name in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"):
        os.environ.pop(name, None)
    torch._dynamo.reset()  # no compiled code left by earlier tests may spare this test's layers a recompile
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    torch._dynamo.reset()
    os.environ.clear()
    os.environ.update(environment)


def test_compiled_layers_train_under_fsdp_bf16_mixed(tiny, tmp_path, process_group_cleanup):
    module = _module(tiny, compile_llm_layers="eager")
    trainer = lightning.Trainer(accelerator="cpu", devices=1, strategy=_strategy(), precision="bf16-mixed",
                                max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=tmp_path)
    batches = _batches(module.vlm)
    trainer.fit(module, train_dataloaders=DataLoader(batches + batches[:1], batch_size=None))
    assert trainer.global_step == 4
    trained = [p for p in module.parameters() if p.requires_grad]
    assert trained and all(torch.isfinite(p).all() for p in trained)


class RecordGradients(lightning.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None}


def _accumulated_gradients(tiny, tmp_path, compile_llm_layers) -> dict[str, torch.Tensor]:
    module = _module(tiny, compile_llm_layers=compile_llm_layers)
    record = RecordGradients()
    trainer = lightning.Trainer(accelerator="cpu", devices=1, strategy=_strategy(), precision="32-true",
                                accumulate_grad_batches=2, max_steps=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                                callbacks=[record])
    trainer.fit(module, train_dataloaders=DataLoader(_batches(module.vlm)[:2], batch_size=None))
    return record.grads


def test_compiled_layers_under_fsdp_keep_accumulated_gradients(tiny, tmp_path, process_group_cleanup):
    """Gradients are dropped only before the first batch of an optimizer step: with 2 accumulated batches the step
    sees both batches' gradients, as without compiled layers (where nothing is dropped early)."""
    compiled = _accumulated_gradients(tiny, tmp_path / "compiled", "eager")
    eager = _accumulated_gradients(tiny, tmp_path / "eager", False)
    assert compiled.keys() == eager.keys() and eager
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=1e-6, msg=name)


def test_in_loop_probes_are_refused_under_fsdp(tiny, tmp_path, process_group_cleanup):
    """The probes run on rank 0 alone; under FSDP that forward would wait for the other ranks for ever, so the
    run is refused before its first step, with the option to change."""
    from mmpeft.callbacks.probes import ForgettingProbes

    module = _module(tiny, compile_llm_layers=False)
    probes = ForgettingProbes([], vqa_shards=str(tmp_path / "vqa"), every_n_steps=1)
    trainer = lightning.Trainer(accelerator="cpu", devices=1, strategy=_strategy(), precision="32-true",
                                max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=tmp_path, callbacks=[probes])
    with pytest.raises(ValueError, match="ForgettingProbes.*FSDP.*trainer/ddp.yaml"):
        trainer.fit(module, train_dataloaders=DataLoader(_batches(module.vlm)[:1], batch_size=None))


def test_bitsandbytes_towers_are_refused_under_fsdp(tiny, tmp_path, process_group_cleanup):
    """nf4 / int8 keep their scales outside the parameters FSDP shards: refused before the first step, naming DDP."""
    pytest.importorskip("bitsandbytes")
    from mmpeft.towers.llm import LLMTower
    from mmpeft.vlm import VisionLanguageModel

    vlm = build_vlm(tiny)
    vlm = VisionLanguageModel(vlm.vision, LLMTower(str(tiny.llm), quantize="int8"),
                              llm_adapter=AdapterSpec("lora", r=4, alpha=8))
    module = VLMModule(vlm, lr=LearningRates(projector=1e-3, llm=1e-3))
    trainer = lightning.Trainer(accelerator="cpu", devices=1, strategy=_strategy(), precision="32-true",
                                max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="quantize='int8' cannot train under FSDP.*trainer/ddp.yaml"):
        trainer.fit(module, train_dataloaders=DataLoader(_batches(module.vlm)[:1], batch_size=None))
