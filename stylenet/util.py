"""Small helpers several modules share: files written atomically, progress lines for long work."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

# Seconds between progress lines of long work (tiling, per-image optimisation) in logs and pipes.
HEARTBEAT_SECONDS = 10.0


@contextlib.contextmanager
def atomic_write(path: str | Path):
    """Yields a binary file beside `path`; on success it is synced and renamed onto `path`, on
    any error removed: a crash or a full disk never leaves half a file under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file readable by its owner only; give it the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable: without it a power cut after os.replace can bring back
    the old name (or none) on some file systems."""
    with contextlib.suppress(OSError):  # not every platform/file system can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Heartbeat:
    """Logs a progress line at most every HEARTBEAT_SECONDS, and always the last one, so that
    long work in a log file or a pipe (no progress bar there) never looks hung."""

    def __init__(self, logger: logging.Logger, total: int):
        self.logger, self.total = logger, total
        self.last = time.monotonic()

    def __call__(self, done: int, msg: str, *args) -> None:
        now = time.monotonic()
        if done >= self.total or now - self.last >= HEARTBEAT_SECONDS:
            self.last = now
            self.logger.info(msg, *args)
