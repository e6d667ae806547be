"""VLDataModule: the data pipeline as a LightningDataModule (train / val / test / probe loaders).

The tokenizer, image transform and placeholder geometry come from the model through ``connect(...)``, which the
CLI calls before any loader is built; nothing about the towers is repeated in the data config.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch

from mmpeft.data.chat import ChatRenderer
from mmpeft.data.collate import Collator
from mmpeft.data.loader import VLLoader, VLStream
from mmpeft.data.mixing import MixSource, WeightedMixer
from mmpeft.data.pipeline import SampleProcessor, ShardRows, SkipCounts
from mmpeft.data.record_rows import RecordRows
from mmpeft.data.shard_specs import resolve_shards
from mmpeft.data.sources import SourceSpec, check_sources


def check_data_options(*, text_ratio: float, text_shards: Any, batch_size: int, eval_batch_size: int | None,
                       num_workers: int, max_length: int, shuffle_buffer: int, bucket_window: int, resampled: bool,
                       rows_per_epoch: int | None, allow_partial_eval: bool = False, sources: Any = None,
                       train_shards: Any = None) -> list[SourceSpec] | None:
    """Raise naming the ``data.*`` option that cannot work; cheap, so the CLI runs it before any tower loads.
    Returns the validated ``data.sources`` (None when not set)."""
    if not isinstance(allow_partial_eval, bool):
        raise ValueError(f"data.allow_partial_eval={allow_partial_eval!r}: must be true or false (whether val / test "
                         "passes that skipped or lost rows are scored)")
    if isinstance(text_ratio, bool) or not 0.0 <= text_ratio < 1.0:
        raise ValueError(f"data.text_ratio={text_ratio!r}: the share of text-only replay rows must be in [0, 1) "
                         "(image rows carry the task loss, so at least some must remain)")
    if text_ratio > 0 and text_shards is None:
        raise ValueError(f"data.text_ratio={text_ratio} needs data.text_shards (text-only replay shards)")
    for name, value, least in (("batch_size", batch_size, 1), ("eval_batch_size", eval_batch_size, 1),
                               ("num_workers", num_workers, 0), ("max_length", max_length, 1),
                               ("shuffle_buffer", shuffle_buffer, 0), ("bucket_window", bucket_window, 0),
                               ("rows_per_epoch", rows_per_epoch, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ValueError(f"data.{name}={value!r}: must be an integer >= {least}")
    if resampled and rows_per_epoch is None:
        raise ValueError("data.resampled=true draws shards forever: set data.rows_per_epoch (rows per rank and "
                         "epoch)")
    if sources is None:
        return None
    if train_shards is not None or text_ratio:
        raise ValueError("data.sources replaces data.train_shards and data.text_ratio: list every training source "
                         "under data.sources (shards too: format: shards; replay text: repeat: true) and unset those")
    specs = check_sources(sources)
    if rows_per_epoch is None and all(s.repeat for s in specs):
        raise ValueError("every data.sources entry has repeat: true, so an epoch never ends: set data.rows_per_epoch "
                         "or let one source end the epoch (repeat: false)")
    return specs


class VLDataModule(L.LightningDataModule):
    """Shard streams for training (image + text-only replay mix), validation, testing and probing.

    Args:
        sources: training data from several places and formats, mixed by weight (``mmpeft.data.sources``: shards,
            LLaVA / ShareGPT JSON, messages JSON(L), ``datasets`` tables, each with a weight and a column mapping);
            replaces ``train_shards`` / ``text_ratio``. Each source's realised share is logged as ``data/share/<name>``.
        train_shards: image (or any) training shards: a shard directory, glob, brace pattern, or a list.
        text_shards: text-only replay shards, mixed in at ``text_ratio`` (with ``sources``: only for Fisher / probes).
        val_shards: validation shards (read in order, no mixing).
        test_shards: test shards.
        text_ratio: fraction of training rows drawn from ``text_shards`` (0: no replay).
        batch_size: rows per training batch.
        eval_batch_size: rows per val/test batch (default ``batch_size``).
        num_workers: DataLoader workers per process (each needs at least one shard per rank).
        max_length: maximum tokens per sample.
        overlong: ``skip`` (count and drop) or ``truncate`` (never through an image) over-long samples.
        system_prompt: system turn added to conversations without one (None: the chat template's default).
        use_chat_template: None: the tokenizer's template when it has one; False: the documented fallback.
        shuffle_buffer: rows in the training shuffle buffer.
        bucket_window: length bucketing window in batches (0: off).
        resampled: draw training shards with replacement (multi-epoch streams); needs ``rows_per_epoch``.
        rows_per_epoch: rows per rank and epoch (with ``resampled``).
        strict: fail on the first bad sample instead of skipping and counting it.
        allow_partial_eval: score val / test passes that skipped samples or lost shard rows (a warning names the
            shards; the counts are logged as ``val/data/*`` / ``test/data/*``). False: such a pass raises
            ``PartialData`` at its end, naming the shards, reasons and counts (evaluation refuses a partial set).
        seed: data order seed (shard order, shuffle buffers, mixing).
    """

    def __init__(
        self,
        train_shards: str | list[str] | None = None,
        text_shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        test_shards: str | list[str] | None = None,
        text_ratio: float = 0.0,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        max_length: int = 2048,
        overlong: Literal["skip", "truncate"] = "skip",
        system_prompt: str | None = None,
        use_chat_template: bool | None = None,
        shuffle_buffer: int = 1000,
        bucket_window: int = 0,
        resampled: bool = False,
        rows_per_epoch: int | None = None,
        strict: bool = False,
        allow_partial_eval: bool = False,
        seed: int = 0,
        sources: list[dict[str, Any]] | None = None,
    ):
        super().__init__()
        self.source_specs = check_data_options(
            text_ratio=text_ratio, text_shards=text_shards, batch_size=batch_size, eval_batch_size=eval_batch_size,
            num_workers=num_workers, max_length=max_length, shuffle_buffer=shuffle_buffer,
            bucket_window=bucket_window, resampled=resampled, rows_per_epoch=rows_per_epoch,
            allow_partial_eval=allow_partial_eval, sources=sources, train_shards=train_shards)
        self.sources = sources
        self.train_shards = train_shards
        self.text_shards = text_shards
        self.val_shards = val_shards
        self.test_shards = test_shards
        self.text_ratio = text_ratio
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.max_length = max_length
        self.overlong = overlong
        self.system_prompt = system_prompt
        self.use_chat_template = use_chat_template
        self.shuffle_buffer = shuffle_buffer
        self.bucket_window = bucket_window
        self.resampled = resampled
        self.rows_per_epoch = rows_per_epoch
        self.strict = strict
        self.allow_partial_eval = allow_partial_eval
        self.seed = seed
        self.processor: SampleProcessor | None = None
        self._train_loader: VLLoader | None = None

    def has_text_rows(self) -> bool | None:
        """Whether training batches can hold text-only rows: True with replay, else from the train shards'
        manifests (None when the shards are given by pattern and nobody counted)."""
        if self.text_ratio > 0:
            return True
        if self.source_specs is not None:
            shards = [s.paths for s in self.source_specs if s.format == "shards"]
            if any(all(Path(p).is_dir() for p in paths) and self._manifest_text(list(paths)) for paths in shards):
                return True
            return None  # other formats are not counted before reading
        specs = [self.train_shards] if isinstance(self.train_shards, str) else list(self.train_shards or [])
        if not specs or not all(Path(s).is_dir() for s in specs):
            return None
        from mmpeft.data.shards import read_manifest

        return any(read_manifest(s)["text_samples"] > 0 for s in specs)

    @staticmethod
    def _manifest_text(dirs: list[str]) -> bool:
        from mmpeft.data.shards import read_manifest

        return any(read_manifest(d)["text_samples"] > 0 for d in dirs)

    def connect(self, tokenizer: Any, image_transform: Callable[[Any], torch.Tensor], image_token: str,
                num_image_tokens: int) -> None:
        """Receive what the model decides: tokenizer, image transform, placeholder string and count per image."""
        renderer = ChatRenderer(tokenizer, image_token, num_image_tokens, max_length=self.max_length,
                                system_prompt=self.system_prompt, use_chat_template=self.use_chat_template,
                                overlong=self.overlong)
        self.processor = SampleProcessor(renderer, image_transform)
        self.pad_token_id = tokenizer.pad_token_id

    def _rows(self, spec, skips: SkipCounts, shuffle: bool, resampled: bool = False) -> ShardRows | None:
        urls = resolve_shards(spec)
        if urls is None:
            return None
        return ShardRows(urls, self.processor, skips, shuffle=shuffle, shuffle_buffer=self.shuffle_buffer,
                         resampled=resampled, seed=self.seed, strict=self.strict)

    def _require_connected(self) -> None:
        if self.processor is None:
            raise RuntimeError("VLDataModule.connect(...) must be called before building loaders (the CLI does it)")

    def source_rows(self, spec: SourceSpec, skips: SkipCounts, shuffle: bool = True) -> ShardRows | RecordRows:
        """One ``data.sources`` entry's rows: shards through ``ShardRows`` (the fast path), anything else through
        ``RecordRows``. A repeating source is cycled through, so it is never drawn with replacement."""
        resampled = self.resampled and not spec.repeat
        if spec.format == "shards":
            return ShardRows(resolve_shards(list(spec.paths)), self.processor, skips, shuffle=shuffle,
                             shuffle_buffer=self.shuffle_buffer, resampled=resampled, seed=self.seed,
                             strict=self.strict)
        return RecordRows(spec, self.processor, skips, shuffle=shuffle, resampled=resampled, seed=self.seed,
                          strict=self.strict)

    def _mixture_loader(self) -> VLLoader:
        skips = SkipCounts(max_workers=max(self.num_workers, 1))
        mixer = WeightedMixer([MixSource(s.name, self.source_rows(s, skips), s.weight, s.repeat)
                               for s in self.source_specs], seed=self.seed)
        stream = VLStream(None, None, 0.0, self.batch_size, Collator(self.pad_token_id), mixer=mixer,
                          bucket_window=self.bucket_window, rows_per_epoch=self.rows_per_epoch, drop_last=False,
                          seed=self.seed)
        self._train_loader = VLLoader(stream, skips, num_workers=self.num_workers, name="train")
        return self._train_loader

    def train_dataloader(self) -> VLLoader:
        self._require_connected()
        if self.source_specs is not None:
            return self._mixture_loader()
        if self.train_shards is None and self.text_ratio < 1:
            raise ValueError("data.train_shards is not set")
        skips = SkipCounts(max_workers=max(self.num_workers, 1))
        image_rows = None if self.text_ratio == 1 else self._rows(self.train_shards, skips, True, self.resampled)
        # The replay stream is cycled through and drawn with replacement, so few text shards suffice.
        text_rows = self._rows(self.text_shards, skips, True, resampled=0 < self.text_ratio < 1)
        stream = VLStream(image_rows, text_rows if self.text_ratio > 0 else None, self.text_ratio, self.batch_size,
                          Collator(self.pad_token_id), bucket_window=self.bucket_window,
                          rows_per_epoch=self.rows_per_epoch, drop_last=False, seed=self.seed)
        self._train_loader = VLLoader(stream, skips, num_workers=self.num_workers, name="train")
        return self._train_loader

    def _eval_loader(self, spec, name: str, scored: bool = True) -> VLLoader | list:
        """The shards read once in order. ``scored``: a val / test set, held to ``allow_partial_eval``."""
        self._require_connected()
        if spec is None:
            return []
        skips = SkipCounts(max_workers=max(self.num_workers, 1))
        stream = VLStream(self._rows(spec, skips, shuffle=False), None, 0.0, self.eval_batch_size,
                          Collator(self.pad_token_id), seed=self.seed)
        return VLLoader(stream, skips, num_workers=min(self.num_workers, len(resolve_shards(spec))), name=name,
                        allow_partial=self.allow_partial_eval if scored else None,
                        allow_hint="data.allow_partial_eval=true (--data.allow_partial_eval=true)")

    def text_dataloader(self) -> VLLoader:
        """The text-only shards read once in order (Fisher estimation, probes): losses counted and reported."""
        if self.text_shards is None:
            raise ValueError("data.text_shards is not set")
        return self._eval_loader(self.text_shards, "text", scored=False)

    def val_dataloader(self):
        """Validation shards; a pass that skipped or lost rows raises ``PartialData`` unless allow_partial_eval."""
        return self._eval_loader(self.val_shards, "val")

    def test_dataloader(self):
        """Test shards; a pass that skipped or lost rows raises ``PartialData`` unless allow_partial_eval."""
        return self._eval_loader(self.test_shards, "test")
