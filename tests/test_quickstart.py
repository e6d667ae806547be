import torch

from mmpeft.apps.quickstart import colour_images, run
from mmpeft.checkpoint import load_pretrained
from mmpeft.data.input_format import renderer_for


def test_quickstart_learns_and_round_trips(tmp_path):
    figures = run(tmp_path, steps=150)  # raises if checkpoint or export do not reproduce the answers
    assert figures["accuracy_after"] >= 0.9 and figures["accuracy_before"] <= 0.5
    assert (tmp_path / "checkpoint" / "llm_adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "export" / "llm" / "model.safetensors").is_file()
    # prompted in the format saved with the export (what mmpeft chat / eval / generate use), it answers as trained
    exported = load_pretrained(tmp_path / "export")
    pixels, truth = colour_images(exported, 16, torch.Generator().manual_seed(3))
    prompt = renderer_for(exported).render_prompt([{"role": "user", "content": "<image>\nWhat color is the picture?"}])
    answers = exported.generate([prompt] * 16, pixels, max_new_tokens=4)
    assert sum(a.strip() == t for a, t in zip(answers, truth)) >= 14, answers
