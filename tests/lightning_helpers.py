"""Callbacks the CLI tests load by class path (``--trainer.callbacks``)."""

from lightning.pytorch.callbacks import Callback


class SimulatedKill(RuntimeError):
    pass


class KillAtStep(Callback):
    """Raise after the optimizer step that makes ``global_step == step``: a process dying mid-epoch."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise SimulatedKill(f"killed at step {trainer.global_step}")


class RecordRanks(Callback):
    """Per rank: the sample ids and row kinds of every training batch, the rank's loss at every step, and a
    fingerprint of the trainable weights."""

    def __init__(self, directory: str):
        self.directory = directory
        self.ids: dict[str, list[str]] = {}
        self.kinds: dict[str, list[str]] = {}
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses[trainer.global_step - 1] = float(loss)  # global_step already counts this step
        epoch = str(batch.get("epoch", trainer.current_epoch))
        self.ids.setdefault(epoch, []).extend(batch["id"])
        self.kinds.setdefault(epoch, []).extend("image" if h else "text" for h in batch["has_image"].tolist())

    def on_train_end(self, trainer, pl_module):
        import json
        from pathlib import Path

        params = {n: float(p.detach().double().sum()) for n, p in pl_module.named_parameters() if p.requires_grad}
        path = Path(self.directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / f"rank{trainer.global_rank}.json").write_text(
            json.dumps({"ids": self.ids, "kinds": self.kinds, "losses": self.losses, "params": params}))


class RecordTrainingModes(Callback):
    """Per training step: whether the LLM and its adapters' dropout are in training mode, and how often the first
    decoder layer ran (twice per step when activation checkpointing recomputes it). Written to ``path`` (JSON)."""

    def __init__(self, path: str):
        self.path = path
        self.steps: list[dict] = []
        self.calls = 0

    def on_train_start(self, trainer, pl_module):
        from mmpeft.llm_layers import decoder_layers

        def count(*_):
            self.calls += 1

        # a pre-hook on the layer's first child: transformers checkpoints ``forward`` (the layer's own hooks stay
        # outside), and recomputation stops early once the tensors backward needs exist again
        next(iter(decoder_layers(pl_module.vlm)[0].children())).register_forward_pre_hook(count)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import torch

        dropouts = [m.training for n, m in pl_module.vlm.llm.named_modules()
                    if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
        self.steps.append({"llm_training": pl_module.vlm.llm.model.training, "adapter_dropout": dropouts,
                           "calls_before": self.calls})

    def on_train_end(self, trainer, pl_module):
        import json

        with open(self.path, "w") as f:
            json.dump({"steps": self.steps, "calls": self.calls}, f)
