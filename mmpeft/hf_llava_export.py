"""``mmpeft export --format hf-llava``: a ``LlavaForConditionalGeneration`` directory that plain transformers loads.

What can be expressed (anything else is refused by ``hf_llava_problems``, naming the part and the alternative):

- vision: CLIP-style ViTs (open_clip ViTs, timm CLIP ViTs) -> ``CLIPVisionModel``, timm SigLIP ViTs ->
  ``SiglipVisionModel``, with LLaVA's ``vision_feature_layer`` / ``vision_feature_select_strategy`` chosen to give
  mmpeft's tokens (``mmpeft.hf_vision_export`` has the mapping and what it refuses: CNNs, final-norm features,
  register tokens, layer scale, ...).
- projector: ``MLPProjector`` with ``num_layers=2``, hidden width = LLM width, GELU, no input norm or groups ->
  ``LlavaMultiModalProjector`` (``linear_1``, ``act="gelu"``, ``linear_2``, biases).
- LLM: any causal LM whose head is ``lm_head`` and whose body is ``base_model_prefix`` (Llama, Mistral, Qwen2, ...)
  -> ``language_model`` / ``lm_head``; tied embeddings stay tied (stored once). Adapters of both towers are merged
  first (``merged_base_state_dict``), as in the mmpeft export. Refused: a soft prompt (no LLaVA counterpart), an LLM
  with logit scaling / soft-capping (LLaVA's head does not apply it).
- processor: ``LlavaProcessor`` = a ``CLIPImageProcessor`` read off the tower's transform (resize, crop,
  bicubic/bilinear, mean/std), the LLM's tokenizer, the image token and ``patch_size`` so that one image token
  in a prompt expands to the model's ``num_image_tokens``, and a chat template that renders the model's saved input
  format (``mmpeft.data.input_format``: its chat template or the USER/ASSISTANT fallback, its system prompt).
  ``generation_config.suppress_tokens`` holds the image token, as ``vlm.generate_ids`` suppresses it.

Everything is written with transformers' own ``save_pretrained`` into an ``atomic_directory``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmpeft.atomic_directory import atomic_directory
from mmpeft.data.input_format import InputFormat, default_input_format
from mmpeft.data.schema import IMAGE_MARKER
from mmpeft.hf_vision_export import HFVision, hf_vision, image_processor_kwargs, vision_problems
from mmpeft.projectors import MLPProjector
from mmpeft.tied_weights import merged_llm_state
from mmpeft.vlm import VisionLanguageModel

INSTEAD = ("export the standalone mmpeft format instead (`mmpeft export CHECKPOINT OUT`, the default --format "
           "mmpeft), which loads with mmpeft.checkpoint.load_pretrained")


def hf_llava_problems(vlm: VisionLanguageModel) -> list[str]:
    """Why ``vlm`` cannot be written as a ``LlavaForConditionalGeneration`` (empty: it can)."""
    problems = vision_problems(vlm.vision) + _projector_problems(vlm)
    if vlm.soft_prompt is not None:
        problems.append(f"a soft prompt ({vlm.soft_prompt.embeddings.shape[0]} learned tokens prepended to every "
                        "input) has no LLaVA counterpart")
    config = vlm.llm.model.config
    if getattr(config, "logit_scale", None) not in (None, 1.0) or getattr(config, "final_logit_softcapping", None):
        problems.append(f"the LLM ({type(vlm.llm.model).__name__}) scales or soft-caps its logits, which "
                        "LlavaForConditionalGeneration's head does not")
    head = vlm.llm.model.get_output_embeddings()
    if head is None or getattr(vlm.llm.model, "lm_head", None) is not head:
        problems.append(f"the LLM ({type(vlm.llm.model).__name__}) has no `lm_head` output layer")
    return problems


def _projector_problems(vlm: VisionLanguageModel) -> list[str]:
    p = vlm.projector
    if type(p) is not MLPProjector:
        return [f"the projector {type(p).__name__} has no LLaVA counterpart (LlavaMultiModalProjector is "
                "MLPProjector with num_layers=2: Linear -> GELU -> Linear, hidden width = the LLM's)"]
    linears = [m for m in p.mlp if isinstance(m, nn.Linear)]
    problems = []
    if len(linears) != 2 or linears[0].out_features != vlm.llm.hidden_size:
        problems.append(f"MLPProjector has {len(linears)} layers of widths {[m.out_features for m in linears]}; "
                        f"LLaVA's has 2, the first {vlm.llm.hidden_size} wide (num_layers=2, hidden_dim unset)")
    if not isinstance(p.norm, nn.Identity) or p.group_scale is not None:
        problems.append("MLPProjector normalises its input (input_norm / input_groups); LLaVA's projector does not")
    return problems


def export_hf_llava(vlm: VisionLanguageModel, directory: str | Path, input_format: InputFormat | None = None) -> Path:
    """Write ``vlm`` (adapters merged; ``vlm`` itself left unchanged) as a transformers LLaVA directory.

    Args:
        input_format: how prompts are rendered, which the processor's chat template reproduces (default: the
            model's saved ``vlm.input_format``, else ``default_input_format``).

    Raises:
        ValueError: the model cannot be expressed; the message lists every part that cannot and the alternative.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    input_format = input_format or vlm.input_format or default_input_format(vlm)
    problems = hf_llava_problems(vlm)
    if problems:
        raise ValueError("cannot export this model as --format hf-llava: " + "; ".join(problems) + f". To keep it, "
                         f"{INSTEAD}")
    vision = hf_vision(vlm.vision)
    side = vlm.vision.image_size[0] // vision.patch_size  # what LlavaProcessor expands one image token to:
    count = side * side + vision.num_additional_image_tokens - (vision.select_strategy == "default")
    if count != vlm.num_image_tokens:
        raise ValueError(f"LlavaProcessor would expand an image to {count} tokens, the model uses "
                         f"{vlm.num_image_tokens} (vision tower {vlm.vision.init_args.get('name')!r}); {INSTEAD}")
    text_config = vlm.llm.model.config
    config = LlavaConfig(
        vision_config=vision.config, text_config=text_config.to_dict(), image_token_index=vlm.llm.image_token_id,
        image_seq_length=vlm.num_image_tokens, projector_hidden_act="gelu", vision_feature_layer=vision.feature_layer,
        vision_feature_select_strategy=vision.select_strategy,
        multimodal_projector_bias=True, tie_word_embeddings=bool(text_config.tie_word_embeddings),
    )
    config.dtype = vlm.llm.dtype
    state = {f"model.vision_tower.{k}": v for k, v in vision.state.items()}
    mlp = [m for m in vlm.projector.mlp if isinstance(m, nn.Linear)]
    for index, linear in enumerate(mlp, start=1):
        state[f"model.multi_modal_projector.linear_{index}.weight"] = linear.weight.detach().clone()
        state[f"model.multi_modal_projector.linear_{index}.bias"] = linear.bias.detach().clone()
    prefix = vlm.llm.model.base_model_prefix + "."
    for key, value in merged_llm_state(vlm.llm.model).items():
        state[key if key.startswith("lm_head.") else "model.language_model." + key.removeprefix(prefix)] = value
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if unexpected or [k for k in missing if not k.startswith("lm_head.")]:  # a tied lm_head is expected absent
        raise ValueError(f"the weights (LLM: {type(vlm.llm.model).__name__}) do not map onto LlavaForConditional"
                         f"Generation: missing {missing[:5]}, unexpected {unexpected[:5]}; {INSTEAD}")
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.suppress_tokens = [vlm.llm.image_token_id]
    model.generation_config.pad_token_id = vlm.llm.tokenizer.pad_token_id
    with atomic_directory(directory) as tmp:
        model.save_pretrained(tmp)
        _processor(vlm, vision, input_format).save_pretrained(tmp)
        (tmp / "mmpeft_export.json").write_text(json.dumps(
            {"format": "hf-llava", "input_format": input_format.to_dict(), "vlm": vlm.config()}, indent=2))
    return Path(directory)


def _processor(vlm: VisionLanguageModel, vision: HFVision, input_format: InputFormat) -> Any:
    """A ``LlavaProcessor``: the tower's transform, the placeholder expansion (LlavaProcessor counts
    ``(size // patch)^2 + num_additional_image_tokens``, minus 1 under "default") and the prompt format."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    return LlavaProcessor(
        image_processor=CLIPImageProcessor(**image_processor_kwargs(vlm.vision)), tokenizer=vlm.llm.tokenizer,
        patch_size=vision.patch_size, vision_feature_select_strategy=vision.select_strategy,
        image_token=vlm.llm.image_token, num_additional_image_tokens=vision.num_additional_image_tokens,
        chat_template=llava_chat_template(input_format, vlm.llm.tokenizer),
    )


def llava_chat_template(fmt: InputFormat, tokenizer: Any) -> str:
    """A Jinja chat template rendering conversations as the model's input format does (``ChatRenderer``).

    Message content may be a string (``<image>`` marks an image, as in mmpeft's data) or transformers' typed parts
    (``{"type": "image"}`` -> the image token, ``{"type": "text", "text": ...}`` -> the text), joined as given.
    The saved system prompt is added when a conversation has none.
    """
    def literal(text: str) -> str:
        return json.dumps(text)  # a JSON string is a valid Jinja string literal

    prelude = (
        "{%- set ns = namespace(msgs=[]) -%}{%- for m in messages -%}"
        "{%- if m['content'] is string -%}{%- set text = m['content'] -%}{%- else -%}"
        "{%- set parts = namespace(text='') -%}{%- for p in m['content'] -%}"
        f"{{%- if p['type'] == 'image' -%}}{{%- set parts.text = parts.text + {literal(fmt.image_token)} -%}}"
        "{%- elif p['type'] == 'text' -%}{%- set parts.text = parts.text + p['text'] -%}{%- endif -%}"
        "{%- endfor -%}{%- set text = parts.text -%}{%- endif -%}"
        f"{{%- set text = text | replace({literal(IMAGE_MARKER)}, {literal(fmt.image_token)}) -%}}"
        "{%- set ns.msgs = ns.msgs + [{'role': m['role'], 'content': text}] -%}{%- endfor -%}"
    )
    if fmt.system_prompt is not None:
        prelude += ("{%- if not ns.msgs or ns.msgs[0]['role'] != 'system' -%}{%- set ns.msgs = [{'role': 'system', "
                    f"'content': {literal(fmt.system_prompt)}}}] + ns.msgs -%}}{{%- endif -%}}")
    prelude += "{%- set messages = ns.msgs -%}"
    if fmt.use_chat_template:
        return prelude + fmt.chat_template
    bos = literal(tokenizer.bos_token or "")
    eos = literal(tokenizer.eos_token)
    return prelude + (  # ChatRenderer._fallback as text: {bos}{system}\n\n USER: ...\n ASSISTANT: ...{eos}\n
        f"{{{{ {bos} }}}}{{%- for m in messages -%}}"
        "{%- if m['role'] == 'system' -%}{{ m['content'] + '\\n\\n' }}"
        "{%- elif m['role'] == 'user' -%}{{ 'USER: ' + m['content'] + '\\n' }}"
        f"{{%- else -%}}{{{{ 'ASSISTANT: ' + m['content'] }}}}{{{{ {eos} }}}}{{{{ '\\n' }}}}{{%- endif -%}}"
        "{%- endfor -%}{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
    )
