import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import MIXED_ROWS, build_vlm, make_batch
from safetensors.torch import load_file

from mmpeft.adapters import AdapterSpec
from mmpeft.apps.main import cli_main
from mmpeft.apps.tiny import TINY_CHAT_TEMPLATE, TINY_TIMM_VIT_KWARGS, save_tiny_llm, save_tiny_timm_vit
from mmpeft.checkpoint import atomic_directory, export, load_pretrained, save_trainable
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.input_format import input_format_of, renderer_for
from mmpeft.fingerprint import base_differences, base_fingerprint
from mmpeft.projectors import LinearProjector
from mmpeft.towers import OpenClipVisionTower, TimmVisionTower
from mmpeft.towers.llm import LLMTower
from mmpeft.vlm import VisionLanguageModel


def _trained(tiny, vision="open_clip", **kwargs):
    vlm = build_vlm(tiny, vision=vision, vision_spec=AdapterSpec("lora", init_weights=False),
                    llm_spec=AdapterSpec("lora", init_weights=False), **kwargs)
    with torch.no_grad():  # make projector and soft prompt differ from a fresh build
        for p in vlm.parameters():
            if p.requires_grad and "lora_" not in str(p):
                p.add_(0.01)
    return vlm


@pytest.mark.parametrize("vision", ["open_clip", "timm_vit", "timm_cnn"])
def test_save_reload_reproduces_logits(tiny, tmp_path, vision):
    vlm = _trained(tiny, vision, soft_prompt_tokens=2)
    batch = make_batch(vlm, MIXED_ROWS)
    with torch.no_grad():
        ref = vlm(**batch, return_logits=True).logits
    save_trainable(vlm, tmp_path / "ckpt", extra={"step": 7})
    files = sorted(str(p.relative_to(tmp_path / "ckpt")) for p in (tmp_path / "ckpt").rglob("*") if p.is_file())
    assert files == ["llm_adapter/adapter_config.json", "llm_adapter/adapter_model.safetensors",
                     "mmpeft_config.json", "trainable.safetensors", "vision_adapter/adapter_config.json",
                     "vision_adapter/adapter_model.safetensors"]
    trainable = load_file(tmp_path / "ckpt" / "trainable.safetensors")
    assert set(trainable) == {f"projector.{k}" for k in vlm.projector.state_dict()} | {"soft_prompt.embeddings"}
    saved = sum(v.numel() for f in (tmp_path / "ckpt").rglob("*.safetensors") for v in load_file(f).values())
    assert saved == sum(r.trainable for r in vlm.trainability()), "trainable state only, nothing frozen"
    reloaded = load_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(reloaded(**batch, return_logits=True).logits, ref)
    assert json.loads((tmp_path / "ckpt" / "mmpeft_config.json").read_text())["extra"] == {"step": 7}


def test_llm_adapter_is_readable_by_peft(tiny, tmp_path):
    from peft import PeftModel

    vlm = _trained(tiny)
    save_trainable(vlm, tmp_path / "ckpt")
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        ref = vlm.llm.model(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(LLMTower(str(tiny.llm)).model, tmp_path / "ckpt" / "llm_adapter")
        torch.testing.assert_close(peft_model(input_ids=ids).logits, ref, rtol=0, atol=0)


def test_load_into_mismatched_model_fails_clearly(tiny, tmp_path):
    save_trainable(_trained(tiny), tmp_path / "ckpt")
    other_rank = build_vlm(tiny, vision_spec=AdapterSpec("lora"), llm_spec=AdapterSpec("lora", r=4))
    with pytest.raises(ValueError, match=r"llm_adapter.*does not fit this model.*shape mismatch"):
        load_pretrained(tmp_path / "ckpt", other_rank)
    from functools import partial

    from mmpeft.projectors import MLPProjector

    other_projector = build_vlm(tiny, vision_spec=AdapterSpec("lora"), llm_spec=AdapterSpec("lora"),
                                projector=partial(MLPProjector, hidden_dim=32))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_pretrained(tmp_path / "ckpt", other_projector)
    with pytest.raises(FileNotFoundError, match="not an mmpeft checkpoint"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_export_matches_unmerged_greedy_outputs(tiny, tmp_path, method):
    vlm = build_vlm(tiny, vision_spec=AdapterSpec(method, init_weights=False),
                    llm_spec=AdapterSpec(method, init_weights=False), soft_prompt_tokens=2)
    prompts = ["<image> what color is the circle?", "The capital of France is"]
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = vlm.generate_ids(prompts, pixels, max_new_tokens=8)
    export(vlm, tmp_path / "export")
    assert (tmp_path / "export" / "llm" / "config.json").is_file()
    llm_keys = load_file(tmp_path / "export" / "llm" / "model.safetensors").keys()
    assert not [k for k in llm_keys if re.search("lora_|base_layer", k)], "a plain HF checkpoint"
    exported = load_pretrained(tmp_path / "export")
    assert exported.llm_adapter.method == "frozen" and exported.vision_adapter.method == "frozen"
    assert torch.equal(exported.generate_ids(prompts, pixels, max_new_tokens=8), expected)
    # the source model is left unmerged and still adapted
    assert torch.equal(vlm.generate_ids(prompts, pixels, max_new_tokens=8), expected)


def test_atomic_directory_keeps_old_contents_on_failure(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("new, half written")
            raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"], "no temporary directory left behind"


def test_no_unsafe_unpickling_in_package():
    root = Path(__file__).parents[1] / "mmpeft"
    for path in root.rglob("*.py"):
        for line in path.read_text().splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: torch.load without weights_only=True"
            assert "trust_remote_code=True" not in line, f"{path}: trust_remote_code must stay opt-in"


# ---------------------------------------------------------------- a model directory is data, not code


class TaggedProjector(LinearProjector):
    """A user's own projector: loadable only when the user allows it."""


@pytest.fixture(scope="module")
def saved_dir(tiny, tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved") / "ckpt"
    save_trainable(_trained(tiny), directory)
    return directory


def _crafted(saved_dir, tmp_path, edit):
    """A copy of a real checkpoint whose mmpeft_config.json was changed by ``edit(config)``."""
    directory = tmp_path / "crafted"
    shutil.copytree(saved_dir, directory)
    config = json.loads((directory / "mmpeft_config.json").read_text())
    edit(config)
    (directory / "mmpeft_config.json").write_text(json.dumps(config))
    return directory


PAYLOADS = {  # callables that would create the file if anything imported and called them
    "subprocess.Popen": lambda f: {"args": ["touch", str(f)]},
    "os.system": lambda f: {"command": f"touch {f}"},
    "builtins.exec": lambda f: {"source": f"open({str(f)!r}, 'w').close()"},
}


@pytest.mark.parametrize("key", ["vision", "llm", "projector"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_loading_never_runs_a_class_the_file_names(saved_dir, tmp_path, key, payload):
    pwned = tmp_path / "pwned"
    crafted = _crafted(saved_dir, tmp_path, lambda c: c["vlm"].__setitem__(
        key, {"class_path": payload, "init_args": PAYLOADS[payload](pwned)}))
    with pytest.raises(ValueError) as info:
        load_pretrained(crafted)
    message = str(info.value)
    assert str(crafted / "mmpeft_config.json") in message and f"vlm.{key}.class_path" in message
    assert payload in message and "allow_classes=" in message and "--allow-class" in message
    assert not pwned.exists(), "nothing named by the file was run"
    # the command line refuses it the same way
    with pytest.raises(ValueError, match=f"vlm.{key}.class_path"):
        cli_main(["export", str(crafted), str(tmp_path / "export")])
    assert not pwned.exists() and not (tmp_path / "export").exists()


def test_saved_trust_remote_code_is_refused_unless_the_caller_passes_it(saved_dir, tmp_path):
    crafted = _crafted(saved_dir, tmp_path, lambda c: c["vlm"]["llm"]["init_args"].__setitem__(
        "trust_remote_code", True))
    with pytest.raises(ValueError, match=r"mmpeft_config.json: key vlm.llm.init_args.trust_remote_code is true.*"
                                         r"--trust-remote-code"):
        load_pretrained(crafted)
    vlm = load_pretrained(crafted, trust_remote_code=True)  # the user's explicit choice
    assert vlm.llm.init_args["trust_remote_code"] is True
    with pytest.raises(ValueError, match="trust_remote_code"):
        cli_main(["export", str(crafted), str(tmp_path / "export")])


def test_an_llm_directory_that_names_its_own_code_is_refused_naming_mmpefts_option(tiny, tmp_path):
    """A config.json with ``auto_map`` (code shipped in the directory): never run, and the error names the option
    that opts in (transformers' own message names only its keyword, which mmpeft users do not call)."""
    from mmpeft.towers import LLMTower

    llm = tmp_path / "llm"
    shutil.copytree(tiny.llm, llm)
    pwned = tmp_path / "pwned"
    (llm / "evil.py").write_text(f"open({str(pwned)!r}, 'w').close()\n"
                                 "from transformers import LlamaConfig as EvilConfig, LlamaForCausalLM as EvilModel\n")
    config = json.loads((llm / "config.json").read_text())
    # a model type transformers does not know, so only the directory's code could build it
    config.update(model_type="evil",
                  auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"})
    (llm / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"(?s)asks to run code it ships.*model\.vlm\.llm\.init_args\."
                                         r"trust_remote_code=true"):
        LLMTower(str(llm))
    assert not pwned.exists(), "nothing in the directory was run"


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda c: c["vlm"]["llm_adapter"].__setitem__("method", "os.system"), r"key vlm.llm_adapter: AdapterSpec.method"),
    (lambda c: c["vlm"]["vision_adapter"].__setitem__("class_path", "os.system"),
     r"key vlm.vision_adapter has unknown fields \['class_path'\]"),
    (lambda c: c["vlm"]["llm_adapter"].__setitem__("r", "8"), r"key vlm.llm_adapter.r = '8' has the wrong type"),
    (lambda c: c["vlm"]["projector"]["init_args"].__setitem__("hidden", 3), r"key vlm.projector.init_args does not"),
    (lambda c: c["vlm"].__setitem__("callback", "os.system"), r"key vlm: missing keys \[\], unknown keys \['callback'"),
    (lambda c: c["input_format"].__setitem__("template_file", "x.py"), r"key input_format: unknown fields"),
    (lambda c: c.__setitem__("format", "pickle"), "format 'checkpoint' or 'export'"),
])
def test_malformed_config_fails_naming_file_and_key(saved_dir, tmp_path, edit, expected):
    crafted = _crafted(saved_dir, tmp_path, edit)
    with pytest.raises(ValueError, match=expected) as info:
        load_pretrained(crafted)
    assert str(crafted / "mmpeft_config.json") in str(info.value)


def test_adapter_spec_from_dict_accepts_only_its_fields():
    assert AdapterSpec.from_dict(AdapterSpec("lora", r=4).to_dict()) == AdapterSpec("lora", r=4)
    with pytest.raises(ValueError, match=r"spec: AdapterSpec.method='prefix' is not one of"):
        AdapterSpec.from_dict({"method": "prefix"}, "spec")
    with pytest.raises(ValueError, match=r"spec has unknown fields \['rank'\]"):
        AdapterSpec.from_dict({"method": "lora", "rank": 4}, "spec")
    with pytest.raises(ValueError, match=r"spec.r = True has the wrong type"):
        AdapterSpec.from_dict({"method": "lora", "r": True}, "spec")
    with pytest.raises(ValueError, match="must be an object"):
        AdapterSpec.from_dict(["lora"], "spec")


@pytest.mark.parametrize("field, value, message", [
    ("r", 10**9, r"spec.r = 1000000000 is outside \[0, 16384\]"),
    ("targets", "(a+)+$", r"spec.targets = '\(a\+\)\+\$': a pattern from a file must be"),
    ("targets", "(.*)*x", r"no quantified group that holds a quantifier"),
    ("targets", "x" * 1001, r"at most 1000 characters"),
    ("ia3_feedforward", "(unclosed", r"spec.ia3_feedforward = '\(unclosed' is not a regular expression"),
])
def test_adapter_spec_from_a_file_is_bounded(field, value, message):
    with pytest.raises(ValueError, match=message):
        AdapterSpec.from_dict({"method": "lora", field: value}, "spec")
    # ordinary saved patterns, the defaults included, still load
    for pattern in (r"layers\.(2[0-9])\..*(q|v)_proj$", AdapterSpec().ia3_feedforward, r".*blocks\.(10|11)\.attn\.qkv"):
        assert AdapterSpec.from_dict({"method": "lora", "targets": pattern}).targets == pattern


def test_user_classes_load_only_when_allowed(tiny, tmp_path):
    vlm = build_vlm(tiny, projector=TaggedProjector)
    save_trainable(vlm, tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"vlm.projector.class_path names 'test_checkpoint.TaggedProjector'.*"
                                         r"allow_classes=\[TaggedProjector\].*--allow-class test_checkpoint"):
        load_pretrained(tmp_path / "ckpt")
    assert type(load_pretrained(tmp_path / "ckpt", allow_classes=[TaggedProjector]).projector) is TaggedProjector
    cli_main(["export", str(tmp_path / "ckpt"), str(tmp_path / "export"), "--allow-class",
              "test_checkpoint.TaggedProjector"])
    assert type(load_pretrained(tmp_path / "export", allow_classes=[TaggedProjector]).projector) is TaggedProjector


# ---------------------------------------------------------------- base fingerprints


def test_adapters_refuse_a_different_base(tiny, tmp_path):
    llm_dir = shutil.copytree(tiny.llm, tmp_path / "llm")
    vit_file = shutil.copy(tiny.timm_vit, tmp_path / "vit.safetensors")
    vlm = VisionLanguageModel(
        TimmVisionTower("vit_tiny_patch16_224", checkpoint_path=str(vit_file), image_size=32,
                        model_kwargs=TINY_TIMM_VIT_KWARGS), LLMTower(str(llm_dir)),
        vision_adapter=AdapterSpec("lora", init_weights=False), llm_adapter=AdapterSpec("lora", init_weights=False))
    save_trainable(vlm, tmp_path / "ckpt")
    load_pretrained(tmp_path / "ckpt")  # the same bases: fine
    save_tiny_llm(llm_dir, seed=1)  # same architecture and tokenizer, other weights, same path
    with pytest.raises(ValueError, match=r"mmpeft_config.json: the frozen base .* differs .*base_fingerprints.*"
                                         r"llm \(.*/llm\): weights: saved sha256.*--allow-base-mismatch") as info:
        load_pretrained(tmp_path / "ckpt")
    assert "vision (" not in str(info.value), "only the replaced tower is reported"
    save_tiny_timm_vit(vit_file, seed=1)
    with pytest.raises(ValueError, match=r"vision \(vit_tiny_patch16_224\): weights.*\| llm"):
        load_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="allow-base-mismatch"):
        cli_main(["export", str(tmp_path / "ckpt"), str(tmp_path / "export")])
    loaded = load_pretrained(tmp_path / "ckpt", allow_base_mismatch=True)  # explicit override: loads
    assert loaded.base_fingerprints["llm"]["weights"] != vlm.base_fingerprints["llm"]["weights"]
    cli_main(["export", str(tmp_path / "ckpt"), str(tmp_path / "export"), "--allow-base-mismatch"])


def test_fingerprint_sees_weights_and_config_not_dtype(tiny):
    base = LLMTower(str(tiny.llm))
    reference = base_fingerprint(base)
    assert base_fingerprint(LLMTower(str(tiny.llm), dtype="bfloat16")) == reference, "same weights, other dtype"
    with torch.no_grad():
        base.model.lm_head.weight[-1, -1] += 1.0  # a sampled position (the last element of every tensor is)
    changed = base_fingerprint(base)
    assert changed["weights"] != reference["weights"] and changed["config"] == reference["config"]
    assert base_differences(reference, changed)[0].startswith("weights: saved sha256")
    other = dict(reference, config=dict(reference["config"], num_hidden_layers=3))
    assert base_differences(other, reference) == ["config num_hidden_layers: saved 3, now 2"]


# ---------------------------------------------------------------- paths do not depend on the current directory


def test_relative_tower_paths_resolve_from_any_directory(tiny, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(tiny.llm, work / "towers" / "llm")
    shutil.copytree(tiny.open_clip.removeprefix("local-dir:"), work / "towers" / "open_clip")
    monkeypatch.chdir(work)
    vlm = VisionLanguageModel(OpenClipVisionTower("local-dir:towers/open_clip"), LLMTower("towers/llm"),
                              llm_adapter=AdapterSpec("lora", init_weights=False))
    batch = make_batch(vlm, MIXED_ROWS)
    with torch.no_grad():
        ref = vlm(**batch, return_logits=True).logits
    save_trainable(vlm, "ckpt")
    export(vlm, "export")
    saved = json.loads((work / "ckpt" / "mmpeft_config.json").read_text())["vlm"]
    assert saved["llm"]["init_args"]["name"] == str(work / "towers" / "llm")
    assert saved["vision"]["init_args"]["name"] == f"local-dir:{work / 'towers' / 'open_clip'}"
    adapter = json.loads((work / "ckpt" / "llm_adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(work / "towers" / "llm")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for directory in (work / "ckpt", work / "export"):
        with torch.no_grad():
            torch.testing.assert_close(load_pretrained(directory)(**batch, return_logits=True).logits, ref,
                                       rtol=1e-5, atol=1e-5)
    moved = shutil.move(work / "export", tmp_path / "moved_export")  # an export holds only paths inside itself
    shutil.rmtree(work / "towers")
    assert load_pretrained(moved).llm.init_args["name"] == str(tmp_path / "moved_export" / "llm")


# ---------------------------------------------------------------- the input format travels with the model


def test_input_format_saved_in_checkpoint_and_export(tiny, tmp_path):
    vlm = _trained(tiny)
    trained = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens, max_length=300,
                           system_prompt="Answer in one word.", overlong="truncate")
    vlm.input_format = input_format_of(trained)
    save_trainable(vlm, tmp_path / "ckpt")
    export(vlm, tmp_path / "export")
    turns = [{"role": "user", "content": "<image>\nWhat color is it?"}, {"role": "assistant", "content": "red"}]
    expected = trained.render_prompt(turns)
    for directory in ("ckpt", "export"):
        saved = json.loads((tmp_path / directory / "mmpeft_config.json").read_text())["input_format"]
        assert saved == {"use_chat_template": True, "chat_template": TINY_CHAT_TEMPLATE,
                         "system_prompt": "Answer in one word.", "image_token": "<image>",
                         "num_image_tokens": vlm.num_image_tokens, "image_placement": "inline", "max_length": 300,
                         "overlong": "truncate"}
        loaded = load_pretrained(tmp_path / directory)
        loaded.llm.tokenizer.chat_template = "{{ 'a changed tokenizer file must not change prompts' }}"
        assert renderer_for(loaded).render_prompt(turns) == expected
    decode = loaded.llm.tokenizer.decode
    assert "Answer in one word." in decode(expected)
    # an explicit override wins
    assert "Answer in one word." not in decode(renderer_for(loaded, system_prompt=None).render_prompt(turns))
    with pytest.raises(ValueError, match="cannot override"):
        renderer_for(loaded, num_image_tokens=3)


def test_model_without_saved_format_uses_defaults_and_warns(tiny, caplog):
    vlm = build_vlm(tiny)
    assert vlm.input_format is None
    renderer = renderer_for(vlm)
    assert "no saved input format" in caplog.text
    assert (renderer.system_prompt, renderer.max_length, renderer.use_chat_template) == (None, 2048, True)


def test_a_loaded_model_is_in_eval_mode_so_adapter_dropout_is_off(tiny, tmp_path):
    """peft creates its dropout layers in training mode after the towers were frozen in eval mode: a model built
    by load_pretrained must not apply them (two forwards differed run to run)."""
    vlm = build_vlm(tiny, vision_spec=AdapterSpec("lora", dropout=0.5, init_weights=False),
                    llm_spec=AdapterSpec("lora", dropout=0.5, init_weights=False))
    save_trainable(vlm, tmp_path / "ckpt")
    reloaded = load_pretrained(tmp_path / "ckpt")
    assert not reloaded.training and not any(m.training for m in reloaded.modules())
    batch = make_batch(reloaded, MIXED_ROWS)
    with torch.no_grad():
        assert torch.equal(reloaded(**batch, return_logits=True).logits, reloaded(**batch, return_logits=True).logits)
    into = build_vlm(tiny, vision_spec=AdapterSpec("lora", dropout=0.5), llm_spec=AdapterSpec("lora", dropout=0.5))
    assert load_pretrained(tmp_path / "ckpt", into.train()).training, "a model passed in keeps its mode"
