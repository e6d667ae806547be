import pytest

from mmpeft.data.chat import ChatRenderer
from mmpeft.data.schema import SampleError, make_record
from mmpeft.towers.llm import LLMTower
from mmpeft.types import IGNORE_INDEX

TWO_TURNS = [
    {"role": "user", "content": "<image>\nWhat color?"}, {"role": "assistant", "content": "red"},
    {"role": "user", "content": "And the shape?"}, {"role": "assistant", "content": "a circle"},
]


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return LLMTower(str(tiny.llm)).tokenizer


def supervised_text(tok, out):
    return tok.decode([lab for lab in out.labels if lab != IGNORE_INDEX])


def test_template_supervises_only_assistant_turns(tokenizer):
    renderer = ChatRenderer(tokenizer, "<image>", num_image_tokens=4)
    out = renderer.render(make_record("x", "t", conversations=TWO_TURNS, images=["img0.jpg"]))
    assert tokenizer.decode(out.input_ids) == (
        "<|user|>\n" + "<image>" * 4 + "\nWhat color?</s>\n<|assistant|>\nred</s>\n"
        "<|user|>\nAnd the shape?</s>\n<|assistant|>\na circle</s>\n")
    assert supervised_text(tokenizer, out) == "red</s>\na circle</s>\n"
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert out.input_ids.count(image_id) == 4 and out.num_images == 1
    assert all(lab == IGNORE_INDEX for tok, lab in zip(out.input_ids, out.labels) if tok == image_id)
    assert all(lab in (tok, IGNORE_INDEX) for tok, lab in zip(out.input_ids, out.labels))


def test_fallback_format_is_the_documented_one(tokenizer):
    renderer = ChatRenderer(tokenizer, "<image>", num_image_tokens=2, use_chat_template=False,
                            system_prompt="Be brief.")
    out = renderer.render(make_record("x", "t", conversations=TWO_TURNS, images=["img0.jpg"]))
    assert tokenizer.decode(out.input_ids) == (
        "<s>Be brief.\n\nUSER: <image><image>\nWhat color?\nASSISTANT: red</s>\nUSER: And the shape?\n"
        "ASSISTANT: a circle</s>\n")
    assert supervised_text(tokenizer, out) == " red</s> a circle</s>"


@pytest.mark.parametrize("template", [None, False])
def test_generation_prompt_is_the_training_prefix(tokenizer, template):
    renderer = ChatRenderer(tokenizer, "<image>", num_image_tokens=3, use_chat_template=template)
    turns = TWO_TURNS[:2]
    full = renderer.render(make_record("x", "t", conversations=turns, images=["img0.jpg"]))
    prompt = renderer.render_prompt(turns)  # drops the reference answer
    assert full.input_ids[: len(prompt)] == prompt
    first_supervised = next(i for i, lab in enumerate(full.labels) if lab != IGNORE_INDEX)
    assert first_supervised == len(prompt)


def test_plain_text_fully_supervised(tokenizer):
    out = ChatRenderer(tokenizer, "<image>", 4).render(make_record("x", "t", text="The fox jumps."))
    assert out.input_ids[0] == tokenizer.bos_token_id and out.labels[0] == IGNORE_INDEX
    assert out.labels[1:] == out.input_ids[1:] and out.num_images == 0


def test_overlong_skip_or_truncate_never_through_an_image(tokenizer):
    turns = [{"role": "user", "content": "Compare <image> with <image>"},
             {"role": "assistant", "content": "The first one is red and the second one is blue."}]
    record = make_record("long", "t", conversations=turns, images=["img0.jpg", "img1.jpg"])
    full = ChatRenderer(tokenizer, "<image>", 8, max_length=10_000).render(record)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    second_image_start = [i for i, t in enumerate(full.input_ids) if t == image_id][8]
    with pytest.raises(SampleError, match=rf"long: {len(full.input_ids)} tokens > max_length 30") as err:
        ChatRenderer(tokenizer, "<image>", 8, max_length=30).render(record, where="long")
    assert err.value.reason == "too_long"
    # A cut inside the second image's run moves back to its start: the second image is dropped whole.
    limit = second_image_start + 3
    cut = ChatRenderer(tokenizer, "<image>", 8, max_length=limit, overlong="truncate")
    with pytest.raises(SampleError, match="nothing supervised remains"):
        cut.render(record)
    turns_answer_first = [{"role": "user", "content": "Say red."}, {"role": "assistant", "content": "red"},
                          {"role": "user", "content": "<image> <image>"}, {"role": "assistant", "content": "ok"}]
    rec2 = make_record("y", "t", conversations=turns_answer_first, images=["img0.jpg", "img1.jpg"])
    full2 = ChatRenderer(tokenizer, "<image>", 8).render(rec2)
    starts = [i for i, t in enumerate(full2.input_ids) if t == image_id]
    out = ChatRenderer(tokenizer, "<image>", 8, max_length=starts[8] + 3, overlong="truncate").render(rec2)
    assert len(out.input_ids) == starts[8] and out.num_images == 1
    assert out.input_ids.count(image_id) == 8


def test_renderer_rejects_unknown_image_token(tokenizer):
    with pytest.raises(ValueError, match="not a token of this tokenizer"):
        ChatRenderer(tokenizer, "<img_missing>", 4)


@pytest.mark.parametrize("template", [None, False])
@pytest.mark.parametrize("overlong", ["skip", "truncate"])
def test_generation_prompt_longer_than_max_length_is_too_long_never_cut(tokenizer, template, overlong):
    """The bug this guards: render_prompt ignored max_length, so `mmpeft eval --max-length` did nothing and an
    over-long prompt reached generate. A prompt is bounded (images included) and never truncated."""
    turns = [{"role": "user", "content": "<image>\nWhat color is the picture?"},
             {"role": "assistant", "content": "red"}]
    length = len(ChatRenderer(tokenizer, "<image>", 8, use_chat_template=template).render_prompt(turns))
    fits = ChatRenderer(tokenizer, "<image>", 8, max_length=length, use_chat_template=template, overlong=overlong)
    assert len(fits.render_prompt(turns)) == length, "a prompt of exactly max_length is kept whole"
    short = ChatRenderer(tokenizer, "<image>", 8, max_length=length - 1, use_chat_template=template,
                         overlong=overlong)
    with pytest.raises(SampleError, match=rf"shard-000000.tar:000007: prompt of {length} tokens > max_length "
                                          rf"{length - 1}") as err:
        short.render_prompt(turns, where="shard-000000.tar:000007")
    assert err.value.reason == "too_long"
