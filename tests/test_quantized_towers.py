"""Low-precision frozen towers (``quantize``: fp8 / nf4 / int8): the layers, the option on every tower, adapters
on top, the exact quantised base, save / load / export round trips, and the refusals.

bitsandbytes runs NF4 and LLM.int8() on the CPU; FP8 runs here through torchao's emulation
(``MMPEFT_FP8_EMULATE=1``: the same FP8 casts, fp32 matmuls). Speed and memory live in
``benchmarks/train_throughput.py``, not here.
"""

import copy
import json
import re
import sys

import pytest
import torch
from conftest import MIXED_ROWS, build_vision, make_batch
from safetensors.torch import load_file
from torch import nn

from mmpeft.adapters import AdapterSpec, disabled_adapters
from mmpeft.checkpoint import export, load_pretrained, save_trainable
from mmpeft.towers.llm import LLMTower
from mmpeft.towers.quantize import (
    FP8_EMULATE_ENV,
    check_scheme,
    dequantized_linears,
    quantization_scheme,
    quantize_linears,
)
from mmpeft.vlm import VisionLanguageModel

pytest.importorskip("bitsandbytes")
pytest.importorskip("torchao")

SCHEMES = ["fp8", "nf4", "int8"]
# relative output error of one quantised layer on Gaussian weights and inputs (fp8 e4m3 ~2^-4 per operand,
# NF4 ~0.1, int8 rowwise ~0.01); generous: the point is "close to the base, not equal"
TOLERANCE = {"fp8": 0.08, "nf4": 0.15, "int8": 0.02}


@pytest.fixture(autouse=True)
def fp8_emulated(monkeypatch):
    monkeypatch.setenv(FP8_EMULATE_ENV, "1")


def _mlp(dtype=torch.float32):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32)).to(dtype)
    with torch.no_grad():
        for layer in (mlp[0], mlp[2]):
            layer.weight.normal_(0, 0.05)
    return mlp.requires_grad_(False)


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantized_layers_compute_close_to_the_base_and_pass_input_gradients(scheme, dtype):
    base = _mlp(dtype)
    quantized = copy.deepcopy(base)
    report = quantize_linears(quantized, scheme, "test")
    assert report.layers == 2 and report.quantized_weights == 64 * 128 + 128 * 32 and not report.kept
    assert quantization_scheme(quantized) == scheme and quantization_scheme(base) is None
    assert all(isinstance(m, nn.Linear) for m in (quantized[0], quantized[2])), "peft wraps nn.Linear subclasses"
    x = torch.randn(3, 5, 64, dtype=dtype, generator=torch.Generator().manual_seed(1))
    x_base, x_quant = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref, out = base(x_base), quantized(x_quant)
    assert out.dtype == dtype and out.shape == ref.shape
    assert 0 < _rel(out, ref) < TOLERANCE[scheme]
    ref.float().square().sum().backward()
    out.float().square().sum().backward()
    assert 0 < _rel(x_quant.grad, x_base.grad) < 2 * TOLERANCE[scheme]
    assert all(p.grad is None for p in quantized.parameters()), "frozen: no weight gradient is computed"


def test_int8_is_quantised_whatever_the_weights_device(monkeypatch):
    """bitsandbytes' ``Int8Params`` quantises in ``.to()`` only when it moves off the CPU: a tower already on a GPU
    held bf16 weights until its first forward (benchmarks/train_throughput.py builds its towers there). Here
    ``.to()``'s quantisation is made to fail, as it is skipped on a GPU: the layers must hold int8 codes anyway."""
    import bitsandbytes as bnb

    monkeypatch.setattr(bnb.nn.Int8Params, "_quantize",
                        lambda self, device: pytest.fail("int8 relied on Int8Params.to() to quantise"))
    base = _mlp(torch.bfloat16)
    quantized = copy.deepcopy(base)
    quantize_linears(quantized, "int8", "test")
    for layer in (quantized[0], quantized[2]):
        assert layer.weight.dtype == torch.int8  # the codes; the row scales move to the layer's state
        assert layer.state.CB is not None and layer.state.SCB is not None
    x = torch.randn(3, 64, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert 0 < _rel(quantized(x), base(x)) < TOLERANCE["int8"]


def test_int8_computes_what_bitsandbytes_computes():
    """``FrozenInt8Linear`` is bitsandbytes' ``Linear8bitLt`` (same codes, same output and input gradient as
    bitsandbytes' own training path on this device) minus the input it kept for a weight gradient."""
    import bitsandbytes as bnb

    quantized = _mlp(torch.bfloat16)
    quantize_linears(quantized, "int8", "test")
    ours = quantized[0]
    theirs = bnb.nn.Linear8bitLt(64, 128, has_fp16_weights=False, threshold=6.0)
    theirs.weight = bnb.nn.Int8Params(ours.state.CB.clone(), requires_grad=False, has_fp16_weights=False,
                                      CB=ours.state.CB.clone(), SCB=ours.state.SCB.clone())
    theirs.bias = torch.nn.Parameter(ours.bias.detach().clone(), requires_grad=False)
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(4))
    x_ours, x_theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_ours, out_theirs = ours(x_ours), theirs(x_theirs)
    assert torch.equal(out_ours, out_theirs)
    grad = torch.randn_like(out_ours)
    out_ours.backward(grad)
    out_theirs.backward(grad)
    assert torch.equal(x_ours.grad, x_theirs.grad)


def test_int8_state_follows_the_parent_module_when_moved():
    """``Linear8bitLt`` keeps its codes and row scales in ``state``, outside the parameters a parent's ``.to()``
    moves: a tower quantised on the CPU and then moved to a GPU by Lightning handed CPU codes to CUDA kernels.
    Moving the parent (here: ``_apply`` with a copy, what ``.to(device)`` does to every tensor) keeps them together."""
    quantized = _mlp()
    quantize_linears(quantized, "int8", "test")
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = quantized(x)
    quantized._apply(lambda t: t.clone())
    for layer in (quantized[0], quantized[2]):
        assert layer.state.CB.data_ptr() == layer.weight.data_ptr(), "the codes are the moved weight"
        assert layer.state.SCB.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(quantized(x), before, rtol=0, atol=0)


def test_int8_keeps_no_input_alive_under_checkpointing():
    """bitsandbytes' int8 matmuls keep their input on the autograd context as plain attributes, which activation
    checkpointing cannot free: every int8 layer's input lived until the backward (Llama-3-8B shapes on an H200:
    1.89x bf16's peak memory). mmpeft's int8 layers save only the weight codes and scales."""
    import gc
    import weakref

    from torch.utils.checkpoint import checkpoint

    quantized = _mlp()
    quantize_linears(quantized, "int8", "test")
    inputs = []

    def block(h):
        inner = h * 3  # what the layer sees: an activation checkpointing should free after the forward
        inputs.append(weakref.ref(inner))
        return quantized(inner)

    x = torch.randn(4, 64, requires_grad=True)
    out = checkpoint(block, x, use_reentrant=False)
    gc.collect()
    assert inputs[0]() is None, "the int8 layer kept its input alive"
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("scheme", ["nf4", "int8"])
def test_dequantized_layers_compute_what_the_quantized_ones_do(scheme):
    quantized = _mlp()
    quantize_linears(quantized, scheme, "test")
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = quantized(x)
        with dequantized_linears(quantized) as count:
            assert count == 2 and type(quantized[0]) is nn.Linear
            dequantized = quantized(x)
    assert quantization_scheme(quantized) == scheme, "the quantised layers are put back"
    # bitsandbytes' CPU kernels dequantise and multiply, so the plain layer is the same function
    torch.testing.assert_close(dequantized, out, rtol=1e-6, atol=1e-6)


def test_fp8_casts_rowwise_with_power_of_two_scales():
    """One row far larger than the others keeps the others' precision (a tensorwise scale would lose it)."""
    from mmpeft.towers.fp8_linear import FrozenFloat8Linear

    layer = nn.Linear(32, 16, bias=False)
    with torch.no_grad():
        layer.weight.normal_()
    fp8 = FrozenFloat8Linear.from_linear(layer, emulate=True)
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    x[0] *= 1e4
    with torch.no_grad():
        out, ref = fp8(x), layer(x)
    assert _rel(out[1:], ref[1:]) < 0.08 and _rel(out[:1], ref[:1]) < 0.08


def test_linears_inside_multihead_attention_stay_in_full_precision():
    module = nn.Module()
    module.attn = nn.MultiheadAttention(32, 4, batch_first=True)
    module.mlp = nn.Linear(32, 64)
    report = quantize_linears(module, "nf4", "test")
    assert report.layers == 1 and list(report.kept) == ["attn.out_proj"]
    assert "MultiheadAttention" in report.kept["attn.out_proj"] and quantization_scheme(module.attn) is None


def test_fp8_keeps_layers_whose_sizes_scaled_mm_cannot_take():
    module = nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 10))
    report = quantize_linears(module, "fp8", "test")
    assert report.layers == 1 and report.kept == {"1": "fp8 needs feature counts divisible by 16"}


def test_unknown_scheme_and_fp8_without_fp8_hardware_are_refused(monkeypatch):
    with pytest.raises(ValueError, match=r"LLMTower\('x'\): quantize='int4' is not a scheme.*'fp8', 'nf4', 'int8'"):
        check_scheme("int4", "LLMTower('x')")
    assert check_scheme(None, "x") is None and check_scheme("none", "x") is None
    monkeypatch.delenv(FP8_EMULATE_ENV)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"quantize='fp8' needs an NVIDIA GPU with FP8 tensor cores.*'nf4'"):
        check_scheme("fp8", "LLMTower('x')")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100")
    with pytest.raises(ValueError, match=r"NVIDIA A100 has 8\.0"):
        check_scheme("fp8", "LLMTower('x')")


def test_a_missing_library_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails
    with pytest.raises(ImportError, match=r"quantize='nf4' needs bitsandbytes: pip install bitsandbytes==0\.50\.2"):
        check_scheme("nf4", "LLMTower('x')")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_llm_tower_quantizes_its_decoder_only(tiny, scheme):
    plain, tower = LLMTower(str(tiny.llm)), LLMTower(str(tiny.llm), quantize=scheme)
    assert tower.init_args["quantize"] == scheme
    decoder_linears = [m for m in tower.model.get_decoder().modules() if isinstance(m, nn.Linear)]
    assert decoder_linears and quantization_scheme(tower.model.get_decoder()) == scheme
    assert tower.quantization.layers == len(decoder_linears) == 2 * 7
    assert type(tower.model.get_output_embeddings()) is nn.Linear, "the LM head stays in the tower's dtype"
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        ref, out = plain.model(input_ids=ids).logits, tower.model(input_ids=ids).logits
    assert 0 < _rel(out, ref) < 3 * TOLERANCE[scheme]


def test_vision_towers_quantize_their_linears_and_a_convolutional_one_is_refused(tiny):
    from mmpeft.apps.tiny import TINY_TIMM_VIT_KWARGS
    from mmpeft.towers import OpenClipVisionTower, TimmVisionTower

    vit = TimmVisionTower("vit_tiny_patch16_224", checkpoint_path=str(tiny.timm_vit), image_size=32,
                          model_kwargs=TINY_TIMM_VIT_KWARGS, quantize="nf4")
    assert vit.quantization.layers > 0 and not vit.quantization.kept and vit.dtype == torch.float32
    clip = OpenClipVisionTower(tiny.open_clip, feature_layer=-1, quantize="int8")
    assert clip.quantization.layers > 0 and all("out_proj" in k for k in clip.quantization.kept)
    pixels = torch.randn(2, 3, *clip.image_size)
    with torch.no_grad():
        assert 0 < _rel(clip(pixels), OpenClipVisionTower(tiny.open_clip, feature_layer=-1)(pixels)) < 0.05
    with pytest.raises(ValueError, match=r"TimmVisionTower\('tf_efficientnet_lite0'\): quantize='nf4' found no "
                                         r"nn\.Linear layer.*Leave quantize unset"):
        TimmVisionTower("tf_efficientnet_lite0", checkpoint_path=str(tiny.timm_cnn), image_size=32,
                        feature_layer=-2, quantize="nf4")


def _vlm(tiny, llm_scheme, method="lora", vision="timm_vit", **kwargs):
    torch.manual_seed(0)
    return VisionLanguageModel(build_vision(tiny, vision), LLMTower(str(tiny.llm), quantize=llm_scheme),
                               vision_adapter=AdapterSpec("lora", init_weights=False),
                               llm_adapter=AdapterSpec(method, init_weights=False), **kwargs)


SUPPORTED = [(s, m) for s in SCHEMES for m in ["lora", "dora", "ia3", "loha", "lokr"]
             if (s, m) not in {("nf4", "loha"), ("nf4", "lokr"), ("int8", "dora")}]


@pytest.mark.parametrize(("scheme", "method"), SUPPORTED)
def test_adapters_train_on_a_quantized_llm_and_switch_off_to_the_exact_quantized_base(tiny, scheme, method):
    vlm = _vlm(tiny, scheme, method)
    batch = make_batch(vlm, MIXED_ROWS)
    loss = vlm(**batch).loss
    loss.backward()
    llm_adapter = [p for n, p in vlm.llm.named_parameters() if p.requires_grad]
    assert llm_adapter and all(p.grad is not None and p.grad.abs().sum() > 0 for p in llm_adapter)
    assert not [n for n, p in vlm.llm.named_parameters() if not p.requires_grad and p.grad is not None]
    base = LLMTower(str(tiny.llm), quantize=scheme)
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad(), disabled_adapters(vlm):
        torch.testing.assert_close(vlm.llm.model(input_ids=ids).logits, base.model(input_ids=ids).logits,
                                   rtol=0, atol=0)


@pytest.mark.parametrize(("scheme", "method"), [("nf4", "loha"), ("nf4", "lokr"), ("int8", "dora"),
                                                ("nf4", "full"), ("int8", "full"), ("fp8", "full")])
def test_methods_that_cannot_train_on_a_quantized_base_are_refused(tiny, scheme, method):
    message = "trains the base weights" if method == "full" else f"peft's {method} layers cannot train on {scheme}"
    with pytest.raises(ValueError, match=message):
        _vlm(tiny, scheme, method)


def test_an_eval_forward_on_the_cpu_leaves_nf4_weights_as_they_were(tiny):
    """bitsandbytes would repack 4-bit weights at the first CPU forward in eval mode, rounding their scales."""
    tower = LLMTower(str(tiny.llm), quantize="nf4")
    before = {k: v.clone() for k, v in tower.model.state_dict().items()}
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        eval_logits = tower.model.eval()(input_ids=ids).logits
        train_logits = tower.model.train()(input_ids=ids).logits
    torch.testing.assert_close(eval_logits, train_logits, rtol=0, atol=0)
    after = tower.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_checkpoint_holds_adapters_only_and_reloads_the_same_model(tiny, tmp_path, scheme):
    vlm = _vlm(tiny, scheme)
    batch = make_batch(vlm, MIXED_ROWS)
    with torch.no_grad():
        ref = vlm(**batch, return_logits=True).logits
    save_trainable(vlm, tmp_path / "ckpt")
    saved = sum(v.numel() for f in (tmp_path / "ckpt").rglob("*.safetensors") for v in load_file(f).values())
    assert saved == sum(r.trainable for r in vlm.trainability()), "no base weight, quantised or not"
    config = json.loads((tmp_path / "ckpt" / "mmpeft_config.json").read_text())
    assert config["vlm"]["llm"]["init_args"]["quantize"] == scheme
    reloaded = load_pretrained(tmp_path / "ckpt")
    assert quantization_scheme(reloaded.llm.model) == scheme
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch, return_logits=True).logits, ref, rtol=0, atol=0)


@pytest.mark.parametrize("scheme", ["nf4", "int8"])
def test_export_merges_into_the_dequantized_base_and_plain_transformers_loads_it(tiny, tmp_path, scheme):
    from transformers import AutoModelForCausalLM

    vlm = _vlm(tiny, scheme)
    batch = make_batch(vlm, MIXED_ROWS)
    with torch.no_grad():
        ref = vlm(**batch, return_logits=True).logits
    export(vlm, tmp_path / "export")
    config = json.loads((tmp_path / "export" / "mmpeft_config.json").read_text())
    assert config["vlm"]["llm"]["init_args"]["quantize"] is None, "an export is a plain full-precision model"
    weights = load_file(tmp_path / "export" / "llm" / "model.safetensors")
    assert not [k for k in weights if re.search("lora_|base_layer|absmax|quant|SCB", k)]
    assert {v.dtype for v in weights.values()} == {torch.float32}
    exported = load_pretrained(tmp_path / "export")
    assert quantization_scheme(exported) is None
    with torch.no_grad():
        out = exported(**batch, return_logits=True).logits
    if scheme == "nf4":  # bitsandbytes' CPU kernel dequantises and multiplies: merged-into-dequantised is the same
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    else:  # LLM.int8() also rounds the activations to int8 (fp16 outliers); the export multiplies them unrounded
        assert _rel(out, ref) < 0.01
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "llm")
    assert quantization_scheme(plain) is None
    assert quantization_scheme(vlm.llm.model) == scheme, "the source model keeps its quantised layers"


def test_fisher_of_a_quantized_llm_is_refused_with_the_way_out(tiny):
    from mmpeft.guards.ewc import estimate_fisher

    vlm = _vlm(tiny, "nf4")
    with pytest.raises(ValueError, match=r"quantize='nf4'.*Estimate it on the same LLM without quantize"):
        estimate_fisher(vlm, [make_batch(vlm, MIXED_ROWS)])


def test_the_option_from_the_command_line_trains_with_the_kl_guard_and_exports(tmp_path):
    """``--model.vlm.llm.init_args.quantize=nf4`` through ``mmpeft fit`` (KL to the quantised base: the guard's
    reference pass runs the adapters-off model), then ``mmpeft export`` gives a plain model."""
    import csv

    from tiny_fit import fit_args

    from mmpeft.apps.main import cli_main
    from mmpeft.apps.tiny import save_tiny_towers

    towers = save_tiny_towers(tmp_path / "towers")
    run = tmp_path / "run"
    cli_main(fit_args(towers, run, "--config", "peft/lora_both.yaml", "--config", "guard/kl_text.yaml",
                      "--model.vlm.llm.init_args.quantize=nf4", "--trainer.max_steps=3"))
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(rows) == 3 and all(float(r["train/loss"]) > 0 for r in rows)
    kl = [float(r["train/kl_to_base"]) for r in rows]
    assert all(v == v and v >= 0 for v in kl) and max(kl) > 0, "the KL guard ran against the quantised base"
    trained = load_pretrained(run / "checkpoints" / "last.ckpt")
    assert quantization_scheme(trained.llm.model) == "nf4"
    cli_main(["export", str(run / "checkpoints" / "last.ckpt"), str(tmp_path / "export")])
    exported = load_pretrained(tmp_path / "export")
    assert quantization_scheme(exported) is None
    batch = make_batch(trained, MIXED_ROWS)
    with torch.no_grad():
        torch.testing.assert_close(exported(**batch, return_logits=True).logits,
                                   trained(**batch, return_logits=True).logits, rtol=1e-4, atol=1e-4)


def test_fp8_layers_compile_into_one_graph_with_the_same_results():
    """``compile_llm_layers`` compiles decoder layers holding FP8 layers: no graph break, same outputs and input
    gradients as eager."""
    from mmpeft.towers.fp8_linear import FrozenFloat8Linear

    base = _mlp()
    eager = nn.Sequential(*(FrozenFloat8Linear.from_linear(m, emulate=True) if isinstance(m, nn.Linear) else m
                            for m in base))
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    eager(x).square().sum().backward()
    expected, x.grad = x.grad.clone(), None
    compiled = torch.compile(eager, fullgraph=True)
    out = compiled(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, eager(x), rtol=0, atol=0)
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)


def test_fp8_cached_weight_casts_give_identical_results_eager_and_compiled():
    """``cache_weight_casts`` (``VLMModule(cache_fp8_weights=True)``, the default) changes no number: outputs and
    input gradients equal the uncached layer's, eager and in one compiled graph; loading weights or moving the layer
    drops the casts, which would otherwise be of the old weight."""
    from mmpeft.towers.fp8_linear import FrozenFloat8Linear
    from mmpeft.towers.quantize import cache_fp8_weight_casts, recast_stale_fp8_weights

    base = _mlp()
    model = nn.Sequential(*(FrozenFloat8Linear.from_linear(m, emulate=True) if isinstance(m, nn.Linear) else m
                            for m in base))
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(5), requires_grad=True)

    def run(module):
        x.grad = None
        out = module(x)
        out.square().sum().backward()
        return out.detach(), x.grad.clone()

    expected = run(model)
    assert len(cache_fp8_weight_casts(model, True)) == 2 and all(m.weight_casts_cached for m in (model[0], model[2]))
    assert "weight casts cached" in repr(model[0])
    for got in (run(model), run(torch.compile(model, fullgraph=True))):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)

    original = model[0].weight.detach().clone()
    with torch.no_grad():  # an edit the layer cannot see: the forward keeps using the cached casts
        model[0].weight.data.mul_(2.0)
    torch.testing.assert_close(run(model), expected, rtol=0, atol=0)
    with torch.no_grad():  # one it sees: stale, cast again before the next step
        model[0].weight.copy_(original)
    assert model[0].weight_casts_stale() and recast_stale_fp8_weights([model[0], model[2]]) == 1
    assert not model[0].weight_casts_stale()
    torch.testing.assert_close(run(model), expected, rtol=0, atol=0)

    changed = {k: v + 1.0 if k.endswith("weight") else v for k, v in model.state_dict().items()}
    model.load_state_dict(changed)
    assert not model[0].weight_casts_cached  # a stale cast would compute with the old weight
    cache_fp8_weight_casts(model, True)
    model.to(torch.float32)
    assert not model[2].weight_casts_cached
    cache_fp8_weight_casts(model, True)
    cache_fp8_weight_casts(model, False)
    assert not model[0].weight_casts_cached


def test_a_fit_keeps_fp8_casts_cached_from_its_start_to_its_end_even_when_it_fails(tiny, tmp_path):
    """``VLMModule(cache_fp8_weights=True)`` (``mmpeft.callbacks.fp8_casts``): every FP8 layer is cached while the
    steps run, a weight changed mid-fit is cast again before the next step, and the casts are dropped when the fit
    ends, also when it raises."""
    import lightning as L

    from mmpeft.module import VLMModule
    from mmpeft.towers.fp8_linear import FrozenFloat8Linear

    vlm = VisionLanguageModel(build_vision(tiny), LLMTower(str(tiny.llm), quantize="fp8"),
                              llm_adapter=AdapterSpec("lora", r=2, alpha=4))
    layers = [m for m in vlm.modules() if isinstance(m, FrozenFloat8Linear)]
    batch = make_batch(vlm, MIXED_ROWS, image_flags=True)
    seen, module = [], VLMModule(vlm)
    step = module.training_step

    def spy(batch, batch_idx):
        seen.append(all(m.weight_casts_cached and not m.weight_casts_stale() for m in layers))
        if batch_idx == 0:
            with torch.no_grad():
                layers[0].weight.mul_(1.0)  # an in-place change the layer sees: stale until cast again
        if batch_idx == 2:
            raise RuntimeError("stop")
        return step(batch, batch_idx)

    module.training_step = spy

    def fit(max_steps):
        L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                  default_root_dir=tmp_path).fit(module, torch.utils.data.DataLoader([batch] * 3, batch_size=None))

    fit(2)
    assert layers and seen == [True, True], "cached at every step, the changed weight cast again"
    assert not any(m.weight_casts_cached for m in layers), "dropped at the end of the fit"
    seen.clear()
    with pytest.raises(RuntimeError, match="stop"):
        fit(3)
    assert seen == [True, True, True] and not any(m.weight_casts_cached for m in layers), "dropped after a failure"
