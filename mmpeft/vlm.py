"""VisionLanguageModel: frozen vision tower -> trainable projector -> frozen causal LLM, adapters in either tower.

Pure PyTorch (no Lightning): import it in a notebook, test it without a Trainer.

Data flow for a batch (``mmpeft.types.Batch`` is the batch contract)::

    pixel_values [N_img, 3, H, W] -> vision [N_img, N, Dv] -> projector [N_img, M, Dl] --+
    input_ids [B, T] -> embed [B, T, Dl] -- placeholders (M per image) overwritten <-----+
        -> soft prompt prepended [B, P+T, Dl] -> LLM decoder -> prompt positions removed -> hidden [B, T, Dl]
        -> LM head at supervised positions only -> cross-entropy

A soft prompt (P learned positions) never leaves the model: every output is aligned with ``input_ids [B, T]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from mmpeft.adapters.inject import apply_adapter
from mmpeft.adapters.soft_prompt import SoftPrompt
from mmpeft.adapters.spec import AdapterSpec
from mmpeft.allowed_classes import check_init_args, class_path, refuse_remote_code, resolve_class
from mmpeft.batch_plan import BatchPlan, supervised_positions
from mmpeft.fingerprint import base_fingerprint
from mmpeft.packing import PackedLayout, register_varlen_attention
from mmpeft.projectors import MLPProjector, Projector
from mmpeft.towers.llm import LLMTower
from mmpeft.towers.vision import VisionTower
from mmpeft.trainability import TrainabilityRow, count_parameters, format_trainability
from mmpeft.types import IGNORE_INDEX, VLMOutput, check_model_inputs
from mmpeft.weight_sources import refuse_weight_sources

if TYPE_CHECKING:
    from mmpeft.data.input_format import InputFormat

log = logging.getLogger(__name__)


class VisionLanguageModel(nn.Module):
    """A frozen vision tower and a frozen causal LLM joined by a trainable projector.

    Trainability is decided here, once, from the per-tower specs, and reported by ``trainability()``.

    Args:
        vision: the image encoder (frozen on its construction).
        llm: the language model + tokenizer (frozen on its construction).
        projector: factory ``(vision_dim, llm_dim) -> Projector``; a class or a ``functools.partial`` of one.
        vision_adapter: how the vision tower trains (default frozen).
        llm_adapter: how the LLM trains (default frozen).
        soft_prompt_tokens: length of a learned prompt prepended to every LLM input (0: none).
        train_projector: False freezes the projector (e.g. stage 2 recipes that keep stage 1's projector).
        pack_sequences: run the LLM padding-free: a batch's real tokens as one packed sequence with per-row
            causal attention (``mmpeft.packing``), so padding costs nothing. Same loss and gradients as padded;
            the LLM's attention becomes ``mmpeft_varlen`` (SDPA for unpacked calls such as generation) unless
            it already is a flash-attention implementation, which reads the same packed-row arguments.

    Attributes:
        base_fingerprints: ``{"vision", "llm"}`` fingerprints of the frozen bases, taken before adapters go in
            (``mmpeft.fingerprint``); saved with checkpoints and checked when adapters are loaded back.
        input_format: how conversations become this model's input ids (``mmpeft.data.input_format``); set by
            training (from the data config) or by ``load_pretrained`` (from the model directory), saved with it.
    """

    def __init__(
        self,
        vision: VisionTower,
        llm: LLMTower,
        projector: Callable[[int, int], Projector] = MLPProjector,
        vision_adapter: AdapterSpec | None = None,
        llm_adapter: AdapterSpec | None = None,
        soft_prompt_tokens: int = 0,
        train_projector: bool = True,
        pack_sequences: bool = False,
    ):
        super().__init__()
        self.vision = vision
        self.llm = llm
        self.projector = projector(vision.embed_dim, llm.hidden_size)
        self.vision_adapter = vision_adapter or AdapterSpec()
        self.llm_adapter = llm_adapter or AdapterSpec()
        self.train_projector = train_projector
        self.projector.requires_grad_(train_projector)
        self.num_image_tokens = self.projector.num_output_tokens(vision.num_tokens)
        self.base_fingerprints = {"vision": base_fingerprint(vision), "llm": base_fingerprint(llm)}
        self.input_format: InputFormat | None = None
        self.vision_peft_config = apply_adapter(vision.model, self.vision_adapter, vision.default_adapter_targets())
        self.llm_peft_config = apply_adapter(llm.model, self.llm_adapter, default_llm_targets(llm.model))
        # Distributed training sets this: every rank must run the same modules every step (DDP needs a gradient
        # for every trainable parameter, FSDP the same collective sequence), so a batch without images still runs
        # the vision tower and projector on one blank image and adds zero times the result.
        self.run_vision_always = False
        self.pack_sequences = pack_sequences
        if pack_sequences and not llm.model.config._attn_implementation.startswith("flash_attention"):
            llm.model.set_attn_implementation(register_varlen_attention())
        self.soft_prompt: SoftPrompt | None = None
        if soft_prompt_tokens > 0:
            self.soft_prompt = SoftPrompt(init_soft_prompt(llm, soft_prompt_tokens))
        log.info("trainable parameters:\n%s", format_trainability(self.trainability()))

    # ------------------------------------------------------------------ config round trip

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (towers, projector, specs) as ``class_path``/``init_args``."""
        return {
            "vision": _class_spec(self.vision, self.vision.init_args),
            "llm": _class_spec(self.llm, self.llm.init_args),
            "projector": _class_spec(self.projector, self.projector.init_args),
            "vision_adapter": self.vision_adapter.to_dict(),
            "llm_adapter": self.llm_adapter.to_dict(),
            "soft_prompt_tokens": self.soft_prompt.embeddings.shape[0] if self.soft_prompt is not None else 0,
            "train_projector": self.train_projector,
            "pack_sequences": self.pack_sequences,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], *, allow_classes: Iterable[type] = (),
                    trust_remote_code: bool = False, source: str = "config", key_prefix: str = "",
                    allow_init_args: Iterable[str] = ()) -> VisionLanguageModel:
        """Rebuild an (untrained) model from ``config()`` output: towers load their base weights again.

        The config is data: towers and projector are built only from the allow-list of
        ``mmpeft.allowed_classes`` plus ``allow_classes``, with arguments of the types their signatures ask for;
        adapter specs only through ``AdapterSpec.from_dict``; arguments that would make a library fetch or unpickle
        weights from a place of the file's choosing are refused (``mmpeft.weight_sources``). Every entry is checked
        before anything is built or imported.

        Args:
            allow_classes: further classes the caller trusts (a custom projector or tower).
            trust_remote_code: allow a saved ``trust_remote_code: true`` (else it is refused).
            allow_init_args: weight-source keys the caller allows, by the full name the refusal reports
                (``vlm.vision.init_args.model_kwargs.checkpoint_path``).
            source: the file the config came from, and ``key_prefix`` its place there (``vlm.``), for messages.

        Raises:
            ValueError naming the file, the key and the fix.
        """
        where = f"{source}: key {key_prefix.rstrip('.')}" if key_prefix else source
        if not isinstance(config, dict):
            raise ValueError(f"{where} must be an object (VisionLanguageModel.config() output)")
        required = {"vision", "llm", "projector", "vision_adapter", "llm_adapter"}
        optional = {"soft_prompt_tokens": int, "train_projector": bool, "pack_sequences": bool}
        missing, unknown = sorted(required - set(config)), sorted(set(config) - required - set(optional))
        if missing or unknown:
            raise ValueError(f"{where}: missing keys {missing}, unknown keys {unknown}; a model config has "
                             f"{sorted(required)} and optionally {sorted(optional)}")
        for name, kind in optional.items():
            value = config.get(name)
            if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
                raise ValueError(f"{source}: key {key_prefix}{name} = {value!r} must be of type {kind.__name__}")
        refuse_remote_code(config, source, trust_remote_code, key_prefix.rstrip("."))
        allowed = tuple(allow_classes)
        classes = {}
        for key in ("vision", "llm", "projector"):  # every class checked before any is built
            classes[key] = resolve_class(config[key], f"{key_prefix}{key}", allowed, source)
            check_init_args(classes[key], config[key].get("init_args", {}), f"{key_prefix}{key}", source)
            refuse_weight_sources(classes[key], config[key].get("init_args", {}), f"{key_prefix}{key}", source,
                                  set(allow_init_args))
        specs = {key: AdapterSpec.from_dict(config[key], f"{source}: key {key_prefix}{key}")
                 for key in ("vision_adapter", "llm_adapter")}
        towers = {}
        for key in ("vision", "llm"):
            try:
                towers[key] = classes[key](**config[key].get("init_args", {}))
            except TypeError as e:  # a value the signature check could not judge (e.g. a timm model_kwargs entry)
                raise ValueError(f"{source}: key {key_prefix}{key}.init_args: {class_path(classes[key])} refused "
                                 f"them ({e}); fix the value in the file") from e
            except (OSError, ValueError) as e:  # the tower's own message, said of the file and key it came from
                raise ValueError(f"{source}: key {key_prefix}{key}.init_args: {e}") from e
        return cls(
            vision=towers["vision"],
            llm=towers["llm"],
            projector=partial(classes["projector"], **config["projector"].get("init_args", {})),
            vision_adapter=specs["vision_adapter"],
            llm_adapter=specs["llm_adapter"],
            soft_prompt_tokens=config.get("soft_prompt_tokens") or 0,
            train_projector=config.get("train_projector") is not False,
            pack_sequences=config.get("pack_sequences") or False,
        )

    def trainability(self) -> list[TrainabilityRow]:
        """One row per component: method, trainable and frozen parameter counts."""
        rows = [
            TrainabilityRow("vision", self.vision_adapter.method, *count_parameters(self.vision)),
            TrainabilityRow("projector", "full" if self.train_projector else "frozen",
                            *count_parameters(self.projector)),
            TrainabilityRow("llm", self.llm_adapter.method, *count_parameters(self.llm)),
        ]
        if self.soft_prompt is not None:
            rows.append(TrainabilityRow("soft_prompt", "soft_prompt", *count_parameters(self.soft_prompt)))
        return rows

    def fully_trained_modules(self) -> dict[str, nn.Module]:
        """``{name in the VLM: module}`` of the towers whose every weight trains (adapter method ``full``): the one
        record of full tuning, read from the specs (checkpoints, ``disabled_adapters``, L2-SP and EWC ask here)."""
        specs = {"vision.model": self.vision_adapter, "llm.model": self.llm_adapter}
        return {name: self.get_submodule(name) for name, spec in specs.items() if spec.method == "full"}

    # ------------------------------------------------------------------ forward

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[N_img, 3, H, W]`` -> ``[N_img, M, Dl]`` projected image tokens.

        The vision tower runs without autograd unless it has trainable parameters (an adapter, full tuning).
        """
        tower_trains = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision.parameters())
        with torch.set_grad_enabled(tower_trains):
            tokens = self.vision(pixel_values)  # [N_img, N, Dv]
        proj_dtype = next(self.projector.parameters()).dtype
        return self.projector(tokens.to(proj_dtype))  # [N_img, M, Dl]

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        plan: BatchPlan | None = None,
    ) -> torch.Tensor:
        """``[B, T, Dl]`` token embeddings with image features spliced in at placeholder positions.

        No soft prompt here: the model prepends it where the LLM runs (``forward``, ``generate_ids``).

        Args:
            input_ids: ``[B, T]``; each image occupies ``num_image_tokens`` placeholder positions.
            pixel_values: ``[N_img, 3, H, W]`` in reading order, or None for a text-only batch. Rows without
                placeholders never reach the vision tower.
            labels: ``[B, T]``, only checked: must be ``IGNORE_INDEX`` at placeholder positions.
            plan: the batch's ``BatchPlan``: placeholders checked on the host and their positions known (the
                check reads values back, and the backward of ``masked_scatter`` selects by mask: host syncs on a GPU).
        """
        is_image = input_ids == self.llm.image_token_id  # [B, T]
        embeds = self.llm.embed(input_ids)  # [B, T, Dl]
        if plan is None:
            self._check_placeholders(is_image, pixel_values, labels)
        if pixel_values is not None and pixel_values.shape[0] > 0:
            image_embeds = self.encode_images(pixel_values).to(embeds.dtype)  # [N_img, M, Dl]
            flat = image_embeds.reshape(-1, embeds.shape[-1])
            # placeholders filled in row-major order: images in reading order, M each
            if plan is None:
                embeds = embeds.masked_scatter(is_image.unsqueeze(-1), flat)
            else:
                embeds = embeds.index_put((plan.image_rows, plan.image_cols), flat)
        elif self.run_vision_always and torch.is_grad_enabled():
            blank = torch.zeros(1, self.vision.in_chans, *self.vision.image_size, device=embeds.device)
            embeds = embeds + 0.0 * self.encode_images(blank).sum().to(embeds.dtype)
        return embeds

    def _with_prefix(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, Dl]``, ``[B, T]`` -> the LLM's ``[B, P+T, Dl]``, ``[B, P+T]``, soft prompt first (P may be 0)."""
        return (embeds, mask) if self.soft_prompt is None else self.soft_prompt.prepend(embeds, mask)

    def _check_placeholders(self, is_image: torch.Tensor, pixel_values: torch.Tensor | None,
                            labels: torch.Tensor | None) -> None:
        per_row = is_image.sum(dim=1)
        num_images = 0 if pixel_values is None else pixel_values.shape[0]
        m = self.num_image_tokens
        if int(per_row.sum()) != num_images * m or bool((per_row % m).any()):
            raise ValueError(
                f"image placeholders and images disagree: {num_images} image(s) x {m} tokens each need "
                f"{num_images * m} placeholder ids ({self.llm.image_token!r}, id {self.llm.image_token_id}), but "
                f"rows hold {per_row.tolist()}. Expand each image placeholder to num_image_tokens={m} ids, and "
                "pass exactly one image per placeholder group, in reading order."
            )
        if labels is not None and bool((labels[is_image] != IGNORE_INDEX).any()):
            raise ValueError(f"labels must be IGNORE_INDEX ({IGNORE_INDEX}) at image placeholder positions")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        return_logits: bool = False,
        plan: BatchPlan | None = None,
    ) -> VLMOutput:
        """Next-token cross-entropy over supervised positions; the LM head runs only there.

        Arguments are the ``mmpeft.types.Batch`` keys of the same names (``attention_mask`` defaults to all ones),
        shape-checked: a ValueError names the key. A soft prompt is prepended and removed inside: the loss is
        ``supervised_loss`` of the returned ``[B, T]`` hidden states, the same tokens scored with or without one.
        ``plan``: this batch's ``plan_batch`` (moved to the model's device): the same results without reading any
        value back from the device (``mmpeft.batch_plan``).

        Returns ``VLMOutput`` aligned with ``input_ids``; ``logits [B, T, V]`` only with ``return_logits=True``.
        """
        check_model_inputs(input_ids, attention_mask, labels, pixel_values)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if plan is not None:
            plan.check_fits(input_ids, labels, pixel_values, self.num_image_tokens, self._prefix_tokens())
        embeds = self.embed_inputs(input_ids, pixel_values, labels, plan)
        embeds, mask = self._with_prefix(embeds, attention_mask)
        if self.pack_sequences:
            layout = PackedLayout.from_attention_mask(mask) if plan is None or plan.layout is None else plan.layout
            packed = self.llm.decoder()(
                inputs_embeds=layout.pack(embeds),
                attention_mask=layout.attention_mask(self.llm.model.config._attn_implementation, embeds.device),
                position_ids=layout.position_ids, use_cache=False, **layout.attention_kwargs(),
            ).last_hidden_state  # [1, N, Dl]
            hidden = layout.unpack(packed)  # [B, P+T, Dl], zeros at padding (the prompt is never padding)
        else:
            # Position ids from the mask make left- and right-padded rows equivalent.
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
            hidden = self.llm.decoder()(
                inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state  # [B, P+T, Dl]
        hidden = hidden[:, hidden.shape[1] - input_ids.shape[1] :]  # [B, T, Dl]: the prompt positions removed
        loss, n = None, 0
        if labels is not None:
            loss, n = self.supervised_loss(hidden, labels, plan)
        logits = self.llm.head_logits(hidden) if return_logits else None
        return VLMOutput(loss=loss, num_supervised=n, hidden_states=hidden, logits=logits)

    def plan_batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   labels: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None) -> BatchPlan:
        """The ``BatchPlan`` of a batch for ``forward``, its placeholders checked: call it on the CPU batch (then
        ``.to(device)``), with the very tensors ``forward`` will get."""
        check_model_inputs(input_ids, attention_mask, labels, pixel_values)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        self._check_placeholders(input_ids == self.llm.image_token_id, pixel_values, labels)
        return BatchPlan.build(input_ids, attention_mask, labels, self.llm.image_token_id, self._prefix_tokens(),
                               self.pack_sequences)

    def _prefix_tokens(self) -> int:
        """P, the soft prompt positions the LLM input gets now (0 without one, or with adapters disabled)."""
        return 0 if self.soft_prompt is None else self.soft_prompt.num_tokens

    def supervised_loss(self, hidden: torch.Tensor, labels: torch.Tensor,
                        plan: BatchPlan | None = None) -> tuple[torch.Tensor, int]:
        """Mean next-token cross-entropy of ``hidden [B, T, D]`` against ``labels [B, T]`` (unshifted).

        Position t predicts ``labels[:, t + 1]``: ``labels[:, 0]`` is never a target (nothing of the input precedes
        it; only plain-text rows of a tokenizer without BOS supervise it), with or without a soft prompt, so a
        prompt-tuned model and its base score the same tokens. Only the K supervised positions go through the LM
        head: ``[K, V]`` logits, never ``[B, T, V]``. ``plan``: the positions and targets of these ``labels``,
        known on the host (without it, K is read back from the device).
        """
        if plan is None:
            rows, cols, targets = supervised_positions(labels)
        else:
            rows, cols, targets = plan.supervised_rows, plan.supervised_cols, plan.targets
        n = rows.shape[0]
        if n == 0:
            return hidden.sum() * 0.0, 0  # keeps the graph (and DDP's gradient structure) intact
        logits = self.llm.head_logits(hidden[rows, cols])  # [K, V]
        return F.cross_entropy(logits.float(), targets), n

    # ------------------------------------------------------------------ generation

    def tokenize_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        """Tokenize prompts that mark each image with the LLM's image token string (e.g. ``"<image>"``),
        expanding every mark to ``num_image_tokens`` placeholder ids. Special tokens (BOS) as the tokenizer adds."""
        mark = self.llm.image_token
        tok = self.llm.tokenizer
        return [tok(p.replace(mark, mark * self.num_image_tokens))["input_ids"] for p in prompts]

    @torch.no_grad()
    def generate_ids(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Batched generation from prompts (strings with image marks, or token id lists with placeholders).

        Prompts are left-padded into one batch. Greedy by default; ``do_sample=True`` with ``temperature``,
        ``top_p``, ``top_k`` (any ``transformers`` generation argument) samples.

        Returns:
            ``[B, L]`` new token ids (padded with the pad id after EOS), the prompt not included.
        """
        ids = self.tokenize_prompts(prompts) if prompts and isinstance(prompts[0], str) else [list(p) for p in prompts]
        tok = self.llm.tokenizer
        device = self.llm.model.device
        # left padding: generation continues from the last column
        padded = tok.pad({"input_ids": ids}, padding=True, padding_side="left", return_tensors="pt")
        input_ids, mask = padded["input_ids"].to(device), padded["attention_mask"].to(device)
        if pixel_values is not None:
            pixel_values = pixel_values.to(device)
        was_training = self.training
        self.eval()
        try:
            # generating from embeddings, transformers returns the new tokens only: the prompt stays internal
            embeds, mask = self._with_prefix(self.embed_inputs(input_ids, pixel_values), mask)
            generate_kwargs.setdefault("suppress_tokens", [self.llm.image_token_id])  # never emit a placeholder
            return self.llm.model.generate(
                inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
                pad_token_id=tok.pad_token_id, **generate_kwargs,
            )
        finally:
            self.train(was_training)

    def generate(self, prompts: Sequence[str], pixel_values: torch.Tensor | None = None, **kwargs: Any) -> list[str]:
        """``generate_ids`` decoded to text (special tokens skipped)."""
        out = self.generate_ids(prompts, pixel_values, **kwargs)
        return self.llm.tokenizer.batch_decode(out, skip_special_tokens=True)


def default_llm_targets(model: nn.Module) -> list[str]:
    """Every linear layer of the LLM's decoder blocks (attention + MLP projections), not the LM head."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear | Conv1D) and m is not head]


def init_soft_prompt(llm: LLMTower, num_tokens: int) -> torch.Tensor:
    """``[P, D]`` start values: embeddings of P vocabulary rows drawn with a fixed seed (Lester et al. 2021)."""
    table = llm.model.get_input_embeddings().weight
    rows = torch.randperm(min(table.shape[0], 5000), generator=torch.Generator().manual_seed(0))[:num_tokens]
    return table[rows].float()


def _class_spec(obj: object, init_args: dict[str, Any]) -> dict[str, Any]:
    return {"class_path": f"{type(obj).__module__}.{type(obj).__qualname__}", "init_args": dict(init_args)}

