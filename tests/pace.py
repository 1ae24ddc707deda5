"""A callback for the kill tests, given to a train.py child process through Hydra
(+callbacks.pace._target_=pace.Pace, with tests/ on PYTHONPATH). It writes the step each training
batch reaches to a file and then waits a little, so a test can kill the process a chosen number of
steps in, however fast the machine runs the steps, without racing the end of the run."""

import time
from pathlib import Path

from pytorch_lightning import Callback


class Pace(Callback):
    def __init__(self, path: str, seconds: float):
        self.path, self.seconds = Path(path), seconds

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        part = self.path.with_name(self.path.name + ".part")
        part.write_text(str(trainer.global_step))
        part.replace(self.path)  # whole or not at all, even under a kill
        time.sleep(self.seconds)


def reached(path: Path) -> int:
    """The last step the child reported as trained; -1 before its first."""
    try:
        return int(path.read_text())
    except FileNotFoundError:
        return -1
