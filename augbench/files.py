"""Files augbench writes: atomic writes that report the real OS error, writability checked before work starts,
and the lock that keeps two processes out of one run directory.

A leaf module (it imports no layer of augbench) so data, models, train and
evaluate all write their files the same way without importing one another.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import socket
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from augbench.errors import AugbenchError, CheckpointError, weights_only_reason


class StorageError(AugbenchError, OSError):
    """A file or directory augbench must write cannot be written (read-only, full, not a directory).

    Raised as StorageError(errno, reason, path); its text is "path: reason".
    """

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


class RunLockedError(AugbenchError):
    """Another live process holds the lock of a run directory."""


class _RecordingFile(io.FileIO):
    """A file that remembers the OSError of its last failed write.

    torch.save's zip writer turns a failed write (a full disk) into
    `RuntimeError: [enforce fail at inline_container.cc] unexpected pos`,
    dropping the OSError that says why; the error recorded here is raised instead.
    """

    write_error: OSError | None = None

    def write(self, data) -> int:
        try:
            return super().write(data)
        except OSError as error:
            self.write_error = error
            raise


def write_atomic(save: Callable[[IO[bytes]], Any], path: str | Path) -> Path:
    """Run `save(file)` on `<path>.partial`, sync it, then rename it over `path`.

    On any error the partial file is removed (if it can be) and `path`, if it
    existed, is untouched; a failed write raises the OSError the operating
    system gave (e.g. ENOSPC, naming the partial file), not what the writer
    library made of it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    raw = None
    try:
        raw = _RecordingFile(partial, "w")
        with io.BufferedWriter(raw) as file:
            save(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException as error:
        # On a read-only location the cleanup fails as the write did: the write's error is the one to report.
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        if raw is not None and raw.write_error is not None and error is not raw.write_error:
            raise raw.write_error from None
        raise
    return path


def describe_os_error(error: OSError, path: str | Path | None = None) -> str:
    """One line: the path and the operating system's reason, e.g. `runs/x/last.ckpt: No space left on device`."""
    where = path if path is not None else error.filename
    reason = error.strerror or str(error)
    return f"{where}: {reason}" if where is not None else reason


def check_writable(directory: str | Path, what: str) -> Path:
    """Raise a StorageError naming `directory` unless files can be created there (or in the nearest existing
    folder above it, where it would be created).

    The check creates and removes a file rather than asking `os.access`, which
    says yes to root on a read-only mount's neighbours and knows nothing of
    full disks' reserved blocks or of a file standing where a folder should be.
    """
    directory = Path(directory)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StorageError(errno.ENOTDIR, f"{existing} is a file, not a directory; choose another {what}",
                           str(directory))
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".augbench-write-check-"):
            pass
    except OSError as error:
        raise StorageError(error.errno, f"cannot write here ({error.strerror or error}); choose another {what}",
                           str(directory)) from None
    return directory


class RunLock:
    """An exclusive lock on a run directory, held until `release()` or the process ends.

    `fcntl.flock` on `<directory>/.lock`: the kernel drops the lock when its
    holder dies, however it dies, so a lock left by a killed process is never
    stale; the file's text (pid and host) only names the holder in the error.
    flock is advisory and per host on some network filesystems; that is the
    same reach as the directory's other users (Lightning, the results store).
    """

    FILE = ".lock"

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / self.FILE
        self._file: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")  # noqa: SIM115  (held open for as long as the lock is)
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "an unknown process"
            file.close()
            raise RunLockedError(f"{self.path.parent}: another augbench process ({holder}) is training this run; "
                                 "wait for it to end, or choose another name=") from None
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


def safe_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`, with any failure reported as a CheckpointError naming `path`."""
    import torch  # a leaf every layer imports: torch only when a checkpoint is read

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():
            # torch's note that a pickle of protocol > 2 may hold instructions its weights-only unpickler lacks: the
            # load then fails with the reason below, or succeeds, and either way the note asks nothing of the user.
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol \d+ in the checkpoint")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the cause
        reason = weights_only_reason(error)
        raise CheckpointError(f"{path}: refused to load as a weights-only checkpoint: {reason}") from None
