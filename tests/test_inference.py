"""``mmpeft chat`` and ``mmpeft generate`` (``mmpeft.inference``) on tiny towers: prompts rendered as trained,
history and images carried across turns, streaming equal to plain greedy decoding, a checkpoint and its export
answering alike, ``--base`` the adapters-off model, and prompts files read strictly with every bad line reported."""

import base64
import io
import json
import sys

import pytest
import torch
from conftest import build_vlm
from data_fixtures import png_bomb, save_image

from mmpeft.adapters import AdapterSpec, disabled_adapters
from mmpeft.apps.main import cli_main
from mmpeft.checkpoint import export, load_pretrained, save_trainable
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.input_format import input_format_of, renderer_for
from mmpeft.inference import ChatSession, GenerationSettings, InferenceModel, load_inference_model, read_prompts
from mmpeft.inference.images import load_image

SYSTEM = "You describe pictures."
TOKENS = 10


@pytest.fixture(scope="module")
def dirs(tiny, tmp_path_factory):
    """A training checkpoint (run layout) and its export, of a model with non-zero LoRA on both towers, a soft
    prompt and a saved system prompt; plus two images."""
    root = tmp_path_factory.mktemp("inference")
    vlm = build_vlm(tiny, vision_spec=AdapterSpec("lora", init_weights=False),
                    llm_spec=AdapterSpec("lora", init_weights=False), soft_prompt_tokens=2)
    vlm.input_format = input_format_of(ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens,
                                                    max_length=256, system_prompt=SYSTEM))
    checkpoint = save_trainable(vlm, root / "run" / "checkpoints" / "last.ckpt", extra={"global_step": 3})
    exported = export(vlm, root / "export")
    red, blue = save_image(root / "img" / "red.png", "red"), save_image(root / "img" / "blue.png", "blue")
    return {"checkpoint": checkpoint, "export": exported, "red": red, "blue": blue, "root": root}


def session(dirs, kind="checkpoint", tokens=TOKENS, **kwargs):
    return ChatSession(load_inference_model(dirs[kind], **kwargs), GenerationSettings(max_new_tokens=tokens))


def chat(args, lines, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
    replies = cli_main(["chat", *args])
    return replies, capsys.readouterr()


# ------------------------------------------------------------------ the session


def test_streamed_text_equals_plain_greedy_text(dirs):
    s = session(dirs)
    s.attach_image(dirs["red"])
    ids, pixels, _ = s.prompt("what is in the picture?")
    plain = s.model.vlm.generate_ids([ids], pixels, max_new_tokens=TOKENS)
    pieces = []
    reply = s.reply("what is in the picture?", stream=pieces.append)
    decoded = s.model.vlm.llm.tokenizer.decode(plain[0], skip_special_tokens=True)
    assert len(pieces) > 1, "text arrives piece by piece"
    assert "".join(pieces) == decoded and reply == decoded.strip() and reply


def test_history_and_a_turn_2_image_are_rendered_as_the_format_says(dirs):
    s = session(dirs)
    first = s.reply("hello there")
    s.attach_image(dirs["blue"])
    second = s.reply("and what colour is this?")
    convs = s.conversation("one more question")
    assert convs == [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": first},
                     {"role": "user", "content": "<image>\nand what colour is this?"},
                     {"role": "assistant", "content": second},
                     {"role": "user", "content": "one more question"}]
    ids, pixels, dropped = s.prompt("one more question")
    renderer = renderer_for(load_pretrained(dirs["checkpoint"]))
    assert ids == renderer.render_prompt(convs) and dropped == 0  # history, system prompt, template: as trained
    text = renderer.tokenizer.decode(ids)
    assert text.index(SYSTEM) < text.index("hello there") < text.index(first) < text.index("<image>") \
        < text.index("and what colour") < text.index(second) < text.index("one more question")
    assert text.count("<image>") == s.model.vlm.num_image_tokens, "the image sits at turn 2, expanded"
    blue = load_image(str(dirs["blue"]), s.model.vlm.vision.image_transform)
    assert torch.equal(pixels, blue[None])
    assert s.turns[0].images == [] and len(s.turns[2].images) == 1


def test_markers_place_images_and_a_mismatch_is_refused_leaving_the_conversation(dirs):
    s = session(dirs)
    s.attach_image(dirs["red"])
    s.attach_image(dirs["blue"])
    assert s.conversation("compare <image> and <image> please")[0]["content"] == "compare <image> and <image> please"
    with pytest.raises(ValueError, match="1 <image> marker.*2 image"):
        s.reply("only <image> one")
    assert s.turns == [] and len(s.pending) == 2
    with pytest.raises(ValueError, match="not found"):
        s.attach_image(dirs["root"] / "nope.png")
    with pytest.raises(ValueError, match="decompression-bomb"):
        (dirs["root"] / "bomb.png").write_bytes(png_bomb(15000, 15000))
        s.attach_image(dirs["root"] / "bomb.png")


def test_overlong_history_drops_the_oldest_exchanges_or_stops(dirs):
    s = session(dirs, max_length=70)
    for i in range(6):
        s.reply(f"question number {i} about the sky")
    assert s.dropped_exchanges > 0
    ids, _, _ = s.prompt("last one")
    assert len(ids) <= 70 and "question number 0" not in s.model.renderer.tokenizer.decode(ids)
    strict = ChatSession(load_inference_model(dirs["checkpoint"], max_length=70), GenerationSettings(8),
                         on_overflow="error")
    with pytest.raises(ValueError, match="no longer fits the model's max_length of 70"):
        for i in range(6):
            strict.reply(f"question number {i} about the sky")
    with pytest.raises(ValueError, match="even without the earlier turns"):
        s.reply("word " * 80)


def test_base_is_the_adapters_off_model_and_an_export_has_none(tiny, dirs):
    adapted, base = session(dirs), session(dirs, base=True)
    vlm = base.model.vlm
    ids, _, _ = base.prompt("The capital of France is")
    with disabled_adapters(vlm):
        expected = vlm.llm.tokenizer.decode(vlm.generate_ids([ids], max_new_tokens=TOKENS)[0],
                                            skip_special_tokens=True).strip()
    assert base.reply("The capital of France is") == expected
    assert adapted.reply("The capital of France is") != expected, "non-zero adapters change the reply"
    assert adapted.model.vlm.llm_adapter.method == "lora", "and the adapters are back on after a base reply"
    with pytest.raises(ValueError, match="is an export, its adapters merged"):
        load_inference_model(dirs["export"], base=True)
    full = build_vlm(tiny, llm_spec=AdapterSpec("full"))
    with pytest.raises(ValueError, match="fully fine-tuned"):
        InferenceModel(full, renderer_for(full), base=True)


# ------------------------------------------------------------------ mmpeft chat


def test_chat_on_a_checkpoint_and_its_export_gives_the_same_replies(dirs, monkeypatch, capsys):
    lines = ["what is this?", "/image " + str(dirs["blue"]), "and this one?", "", "/reset", "The capital of",
             "/quit", "never read"]
    out = {}
    for kind in ("checkpoint", "export"):
        replies, captured = chat(["--model", str(dirs[kind]), "--image", str(dirs["red"]), "--max-new-tokens",
                                  str(TOKENS), "--device", "cpu"], lines, monkeypatch, capsys)
        assert len(replies) == 3 and all(replies)
        assert captured.out.splitlines() == replies, "each reply streamed to stdout, one line each"
        assert "(image attached" in captured.err and "(new conversation)" in captured.err
        out[kind] = replies
    assert out["checkpoint"] == out["export"]
    # the same turns through the library: the CLI adds nothing of its own to the conversation
    s = session(dirs)
    s.attach_image(dirs["red"])
    first = s.reply("what is this?")
    s.attach_image(dirs["blue"])
    assert [first, s.reply("and this one?")] == out["checkpoint"][:2]
    base, _ = chat(["--model", str(dirs["checkpoint"]), "--base", "--max-new-tokens", str(TOKENS)],
                   ["The capital of"], monkeypatch, capsys)
    assert base != out["checkpoint"][2:]


def test_chat_keeps_going_after_a_bad_command_and_refuses_bad_flags(dirs, monkeypatch, capsys):
    replies, captured = chat(["--model", str(dirs["export"]), "--max-new-tokens", "4"],
                             ["/image missing.png", "/frobnicate", "hi"], monkeypatch, capsys)
    assert len(replies) == 1 and "missing.png not found" in captured.err and "unknown command" in captured.err
    with pytest.raises(ValueError, match="temperature"):
        cli_main(["chat", "--model", str(dirs["export"]), "--temperature", "-1"])
    with pytest.raises(ValueError, match="is an export"):
        cli_main(["chat", "--model", str(dirs["export"]), "--base"])


# ------------------------------------------------------------------ prompts files and mmpeft generate


def write_prompts(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def good_lines(dirs):
    png = base64.b64encode(dirs["red"].read_bytes()).decode()
    return [
        {"id": "plain", "prompt": "The capital of France is"},
        {"id": "pic", "prompt": "what colour?", "images": ["img/red.png"]},
        {"id": 7, "conversations": [{"role": "user", "content": "<image>\nwhat is it?"},
                                    {"role": "assistant", "content": "a square"},
                                    {"role": "user", "content": "what colour?"},
                                    {"role": "assistant", "content": "reference answer, dropped"}],
         "images": ["img/blue.png"], "meta": {"split": "dev"}},
        {"id": "openai", "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": [
                                          {"type": "text", "text": "first"},
                                          {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                                          {"type": "text", "text": "then"},
                                          {"type": "image", "image": "img/blue.png"}]}]},
    ]


def test_prompt_lines_become_schema_turns_with_images_in_marker_order(dirs, tmp_path):
    rows, bad = read_prompts(write_prompts(tmp_path / "p.jsonl", good_lines(dirs) + [{"prompt": "no id"}]))
    assert bad == [] and [r.id for r in rows] == ["plain", "pic", 7, "openai", 5]
    assert rows[1].conversations == [{"role": "user", "content": "<image>\nwhat colour?"}]
    assert rows[2].conversations[-1] == {"role": "user", "content": "what colour?"} and len(rows[2].conversations) == 3
    assert rows[3].conversations[1]["content"] == "first\n<image>\nthen\n<image>"
    assert rows[3].images[0].startswith("data:image/png;base64,") and rows[3].images[1] == "img/blue.png"


def _run_generate(dirs, prompts, out, *extra, kind="checkpoint"):
    return cli_main(["generate", "--model", str(dirs[kind]), "--input", str(prompts), "--output", str(out),
                     "--max-new-tokens", "6", "--no-progress", *extra])


def test_generate_round_trip_keeps_ids_and_is_deterministic(dirs, tmp_path):
    prompts = write_prompts(dirs["root"] / "prompts.jsonl", good_lines(dirs))
    out = tmp_path / "out.jsonl"
    report = _run_generate(dirs, prompts, out, "--batch-size", "3")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert report.written == 4 and [r["id"] for r in rows] == ["plain", "pic", 7, "openai"]
    assert [r["line"] for r in rows] == [1, 2, 3, 4] and rows[2]["meta"] == {"split": "dev"}
    assert all(r["finish_reason"] in ("stop", "length") and 1 <= r["generated_tokens"] <= 6 for r in rows)
    assert rows[0]["settings"] == {"model": str(dirs["checkpoint"]), "format": "checkpoint", "adapters": "on",
                                   "max_new_tokens": 6, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "seed": None,
                                   "batch_size": 3}
    # each greedy row is the chat reply to the same turns
    s = session(dirs, tokens=6)
    s.attach_image(dirs["red"])
    assert rows[1]["prediction"] == s.reply("what colour?")
    again = tmp_path / "again.jsonl"
    _run_generate(dirs, prompts, again, "--batch-size", "3")
    assert again.read_text() == out.read_text(), "greedy decoding is deterministic"
    _run_generate(dirs, prompts, again, "--batch-size", "1")
    assert [json.loads(line)["prediction"] for line in again.open()] == [r["prediction"] for r in rows], \
        "left padding changes no greedy answer"
    _run_generate(dirs, prompts, again, kind="export")
    exported = [json.loads(line) for line in again.open()]
    assert [r["prediction"] for r in exported] == [r["prediction"] for r in rows]
    assert exported[0]["settings"]["format"] == "export"
    sampled = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        _run_generate(dirs, prompts, tmp_path / f"{name}.jsonl", "--temperature", "1.5", "--seed", seed)
        sampled[name] = [json.loads(line)["prediction"] for line in (tmp_path / f"{name}.jsonl").open()]
    assert sampled["a"] == sampled["b"] != sampled["c"]
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_bad_lines_are_listed_by_number_and_refused_unless_partial_is_allowed(dirs, tmp_path, capsys):
    lines = good_lines(dirs)[:2] + [
        "{not json",
        {"id": "plain", "prompt": "duplicate id"},
        {"id": "x", "prompt": "no image here", "images": ["img/missing.png"]},
        {"id": "y", "prompt": "<image> <image>", "images": ["img/red.png"]},
        "",
        {"id": "z", "promt": "typo"},
        {"id": "w", "prompt": "remote", "images": ["https://example.com/a.png"]},
        {"id": "v", "conversations": [{"role": "assistant", "content": "hi"}]},
        {"id": "long", "prompt": "word " * 300},
    ]
    prompts = write_prompts(dirs["root"] / "bad_prompts.jsonl", lines)
    out = tmp_path / "out.jsonl"
    out.write_text("previous output\n")
    with pytest.raises(SystemExit) as refused:
        _run_generate(dirs, prompts, out)
    message = str(refused.value)
    assert "8 line(s)" in message and "--allow-partial" in message
    for number, reason in ((3, "malformed_json"), (4, "duplicate_id"), (5, "missing_image"), (6, "image_marker"),
                           (8, "bad_field"), (9, "missing_image"), (10, "bad_turn_order"), (11, "too_long")):
        assert f"bad_prompts.jsonl:{number}: [{reason}]" in message, (number, reason)
    assert "already used on line 1" in message and "remote images are not fetched" in message
    assert out.read_text() == "previous output\n", "nothing generated, nothing written"
    report = _run_generate(dirs, prompts, out, "--allow-partial")
    assert report.written == 2 and [b.line for b in report.bad_lines] == [3, 4, 5, 6, 8, 9, 10, 11]
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["plain", "pic"]
    assert "bad_prompts.jsonl:11: [too_long]" in capsys.readouterr().err


def test_output_is_whole_or_untouched(dirs, tmp_path, monkeypatch):
    prompts = write_prompts(dirs["root"] / "prompts2.jsonl", good_lines(dirs))
    out = tmp_path / "out.jsonl"
    out.write_text("previous output\n")
    calls = []
    real = type(load_pretrained(dirs["checkpoint"])).generate_ids

    def dies_on_batch_2(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(load_pretrained(dirs["checkpoint"])), "generate_ids", dies_on_batch_2)
    with pytest.raises(RuntimeError, match="out of memory"):
        _run_generate(dirs, prompts, out, "--batch-size", "2")
    assert out.read_text() == "previous output\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    with pytest.raises(ValueError, match="is the prompts file itself"):
        _run_generate(dirs, prompts, prompts)
    for args in ((tmp_path / "none.jsonl", out), (prompts, tmp_path / "no_dir" / "out.jsonl")):
        with pytest.raises(SystemExit) as refused:
            _run_generate(dirs, *args)
        assert refused.value.code == 2
