from mmpeft.apps.quickstart import run


def test_quickstart_learns_and_round_trips(tmp_path):
    figures = run(tmp_path, steps=150)  # raises if checkpoint or export do not reproduce the answers
    assert figures["accuracy_after"] >= 0.9 and figures["accuracy_before"] <= 0.5
    assert (tmp_path / "checkpoint" / "llm_adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "export" / "llm" / "model.safetensors").is_file()
