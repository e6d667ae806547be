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
