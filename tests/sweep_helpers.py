"""A callback the sweep tests load by class path (``--trainer.callbacks+=sweep_helpers.PauseOnce``), so that a sweep
can be killed with a run deterministically part-way through its fit."""

import os
import signal

from lightning.pytorch.callbacks import Callback


class PauseOnce(Callback):
    """The first run (of all runs given the same ``marker``) to start optimizer step ``step`` creates ``marker``
    (holding its run directory) and blocks there until it is killed; every other run, and that run when it is
    resumed, trains on. The checkpoint of step ``step - 1`` exists by then with ``--checkpoint_every_n_steps=1``."""

    def __init__(self, marker: str, step: int = 2):
        self.marker = marker
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step != self.step:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # exactly one run pauses
        except FileExistsError:
            return
        os.write(fd, trainer.default_root_dir.encode())  # the run directory: which run paused
        os.close(fd)
        while True:
            signal.pause()  # until the test kills the sweep's process group
