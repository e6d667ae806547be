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
    """Per rank: the sample ids and row kinds of every training batch, and a fingerprint of the trainable weights."""

    def __init__(self, directory: str):
        self.directory = directory
        self.ids: dict[str, list[str]] = {}
        self.kinds: dict[str, list[str]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
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
            json.dumps({"ids": self.ids, "kinds": self.kinds, "params": params}))
