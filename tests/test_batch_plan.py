"""A batch planned on the host trains exactly as without a plan, and its forward reads nothing back."""

from __future__ import annotations

import pytest
import torch
from conftest import MIXED_ROWS, build_vlm, make_batch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch.utils._python_dispatch import TorchDispatchMode

from mmpeft.adapters import AdapterSpec
from mmpeft.batch_plan import PLAN_KEY, BatchPlan
from mmpeft.module import VLMModule

ROWS = MIXED_ROWS + [(1, " a long question that pads the others out quite a lot more?", " yes it does.")]
aten = torch.ops.aten


class HostReads(TorchDispatchMode):
    """Records the operators that, on a GPU, read a value back to the host: ``item``/``bool``/``int`` of a tensor
    (``_local_scalar_dense``), ``nonzero``, ``masked_select`` and ``masked_scatter``'s backward (which selects),
    boolean-mask indexing (a ``nonzero`` inside), and ``repeat_interleave`` without ``output_size``.
    ``Tensor.tolist`` does not dispatch on the CPU: the test wraps it. ``masked_scatter`` itself is not one: CUDA
    checks its count on the device."""

    ALWAYS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
              aten.masked_scatter_backward.default, aten.repeat_interleave.Tensor}

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.ALWAYS and not (func is aten.repeat_interleave.Tensor and kwargs.get("output_size")):
            self.reads.append(str(func))
        elif func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
            if any(i is not None and i.dtype == torch.bool for i in args[1]):
                self.reads.append(f"{func} with a bool mask")
        return func(*args, **kwargs)


def _record_reads(monkeypatch, run):
    tolist = torch.Tensor.tolist
    with HostReads() as mode:
        monkeypatch.setattr(torch.Tensor, "tolist", lambda t: mode.reads.append("tolist") or tolist(t))
        run()
    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    return mode.reads


def _vlm(tiny, **kwargs):
    spec = AdapterSpec("lora", r=4, alpha=8)
    vlm = build_vlm(tiny, llm_spec=spec, vision_spec=spec, **kwargs)
    for p in vlm.parameters():  # LoRA B starts at zero: make the adapters matter
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    return vlm


def _train_step(vlm, batch, plan=None):
    vlm.zero_grad()
    out = vlm(**batch, plan=plan)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in vlm.named_parameters() if p.requires_grad}


def _left_padded(batch, pad_id):
    """The same rows padded on the left, plus a row that is all padding (empty)."""
    out = {k: v.clone() for k, v in batch.items() if k != "pixel_values"}
    for i, n in enumerate(batch["attention_mask"].sum(1).tolist()):
        for key in ("input_ids", "attention_mask", "labels"):
            out[key][i] = batch[key][i].roll(batch[key].shape[1] - n)
    empty = {"input_ids": torch.full_like(out["input_ids"][:1], pad_id),
             "labels": torch.full_like(out["labels"][:1], -100),
             "attention_mask": torch.zeros_like(out["attention_mask"][:1])}
    out = {k: torch.cat([out[k], empty[k]]) for k in empty}
    return {**out, "pixel_values": batch["pixel_values"]}


@pytest.mark.parametrize(("pack", "soft_prompt", "padding"),
                         [(True, 0, "right"), (True, 3, "right"), (False, 0, "right"), (True, 0, "left"),
                          (True, 2, "left")])
def test_planned_forward_equals_unplanned(tiny, pack, soft_prompt, padding):
    vlm = _vlm(tiny, pack_sequences=pack, soft_prompt_tokens=soft_prompt)
    batch = make_batch(vlm, ROWS)
    if padding == "left":
        batch = _left_padded(batch, vlm.llm.tokenizer.pad_token_id)
    out_a, grads_a = _train_step(vlm, batch)
    out_b, grads_b = _train_step(vlm, batch, vlm.plan_batch(**batch))
    assert out_b.num_supervised == out_a.num_supervised > 0
    torch.testing.assert_close(out_b.loss, out_a.loss, rtol=0, atol=0)
    torch.testing.assert_close(out_b.hidden_states, out_a.hidden_states, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=0, atol=0, msg=name)


def test_planned_forward_without_labels_equals_unplanned(tiny):
    vlm = _vlm(tiny, pack_sequences=True)
    batch = make_batch(vlm, ROWS)
    del batch["labels"]
    with torch.no_grad():
        a, b = vlm(**batch), vlm(**batch, plan=vlm.plan_batch(**batch))
    assert a.loss is None and b.loss is None and b.num_supervised == 0
    torch.testing.assert_close(b.hidden_states, a.hidden_states, rtol=0, atol=0)


def test_planned_packed_training_step_reads_nothing_back(tiny, monkeypatch):
    """The recorder sees the unplanned forward's reads (so it can fail), and none with a plan: on a GPU the step
    never waits for the device (the host syncs behind mmpeft's idle time per step in docs/benchmarks.md)."""
    vlm = _vlm(tiny, pack_sequences=True)
    # rows of one length: packed attention runs dense SDPA, as on a GPU (mixed rows there run the variable-length
    # flash kernel; on the CPU they run SDPA row by row, slicing at the row bounds read from cu_seqlens)
    batch = make_batch(vlm, [ROWS[0]] * 3)
    pad = torch.full((3, 2), vlm.llm.tokenizer.pad_token_id)  # two columns of padding on every row
    batch["input_ids"] = torch.cat([batch["input_ids"], pad], 1)
    batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros_like(pad)], 1)
    batch["labels"] = torch.cat([batch["labels"], torch.full_like(pad, -100)], 1)
    unplanned = _record_reads(monkeypatch, lambda: _train_step(vlm, batch))
    # the backward is watched too: masked_scatter's gradient for the image features selects by mask
    assert {"tolist", "aten.nonzero.default", "aten.masked_scatter_backward.default"} <= set(unplanned), unplanned
    plan = vlm.plan_batch(**batch)
    assert _record_reads(monkeypatch, lambda: _train_step(vlm, batch, plan)) == []


def test_plan_of_another_shape_or_prompt_state_is_refused(tiny):
    vlm = _vlm(tiny, pack_sequences=True, soft_prompt_tokens=2)
    batch = make_batch(vlm, ROWS)
    plan = vlm.plan_batch(**batch)
    vlm.soft_prompt.enable_adapters(False)  # the LLM input is now 2 positions shorter than planned
    with pytest.raises(ValueError, match=r"made for input_ids \[4, \d+\] and LLM input \[4, \d+\]"):
        vlm(**batch, plan=plan)
    vlm.soft_prompt.enable_adapters(True)
    short = make_batch(vlm, ROWS[:2])
    with pytest.raises(ValueError, match="build the plan with the model's plan_batch"):
        vlm(**short, plan=plan)
    unlabelled = {k: v for k, v in batch.items() if k != "labels"}
    with pytest.raises(ValueError, match="made with labels, and the forward got the opposite"):
        vlm(**unlabelled, plan=plan)  # would be a loss of 0 over no targets
    with pytest.raises(ValueError, match=r"holds \d+ image placeholder positions, and the forward got 3 image"):
        vlm(**{**batch, "pixel_values": batch["pixel_values"][:3]}, plan=plan)  # placeholders left unfilled


def test_module_plans_training_batches_and_lightning_moves_the_plan(tiny, monkeypatch):
    vlm = _vlm(tiny, pack_sequences=True)
    module = VLMModule(vlm)
    batch = make_batch(vlm, ROWS, image_flags=True)

    class Trainer:
        training = True

    module._trainer = Trainer()
    planned = module.on_before_batch_transfer(dict(batch), 0)
    plan = planned[PLAN_KEY]
    assert isinstance(plan, BatchPlan)
    # the task loss: image rows only, so the text-only row's answer is not among the targets
    text_row = 1
    assert text_row not in plan.supervised_rows.tolist() and plan.num_supervised > 0
    moved_to = []
    to = BatchPlan.to
    monkeypatch.setattr(BatchPlan, "to", lambda self, device, **kw: moved_to.append(str(device)) or to(self, device))
    moved = move_data_to_device(planned, torch.device("cpu"))
    assert moved_to == ["cpu"], "Lightning moves the plan through BatchPlan.to"
    assert isinstance(moved[PLAN_KEY], BatchPlan) and moved[PLAN_KEY].layout.max_length == plan.layout.max_length
    Trainer.training = False  # validation batches are not planned
    assert PLAN_KEY not in module.on_before_batch_transfer(dict(batch), 0)


def test_a_fit_with_a_datamodule_trains_planned_batches_without_lightnings_warning(tiny, tmp_path):
    """Through Lightning: the module's hook plans each training batch (the plan reaches training_step, moved by
    Lightning), and Lightning's note that the module's hook is used with a datamodule is not shown."""
    import warnings

    import lightning as L
    from lightning.pytorch.trainer.connectors import data_connector

    data_connector.warning_cache.clear()  # Lightning says each message once per process
    vlm = _vlm(tiny, pack_sequences=True)
    batch = make_batch(vlm, ROWS, image_flags=True)

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader([batch, batch], batch_size=None)

    module = VLMModule(vlm)
    seen = []
    step = module.training_step
    module.training_step = lambda batch, batch_idx: seen.append(batch.get(PLAN_KEY)) or step(batch, batch_idx)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        trainer.fit(module, datamodule=Data())
    assert len(seen) == 2 and all(isinstance(p, BatchPlan) and p.num_supervised > 0 for p in seen)
    assert not [w for w in caught if "on_before_batch_transfer" in str(w.message)]
