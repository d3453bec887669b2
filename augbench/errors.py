"""The errors augbench raises for bad input; each message names the file, key or value at fault."""

import re


class AugbenchError(Exception):
    """Base of augbench's input errors; the command line prints their message without a traceback.

    An error raised in a DataLoader worker process reaches the main process re-made by torch from its type and a
    text of "Caught DataError in DataLoader worker process 0. Original Traceback (most recent call last): …" that
    ends with the original message. Made from such a text, the error keeps only that message (the worker's
    traceback stays in `worker_traceback`), so the command line still prints one line.
    """

    worker_traceback: str | None = None

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            original = _message_from_worker(args[0], type(self).__name__)
            if original is not None:
                self.worker_traceback = args[0]
                args = (original,)
        super().__init__(*args)


class AugbenchWarning(UserWarning):
    """Base of augbench's warnings about its inputs; the command line prints each as one line."""


class DataWarning(AugbenchWarning):
    """Data that loads, but not as it lies on disk (a skipped image, a directory link not followed twice)."""


_WORKER_HEADER = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.\n"
                            r"Original Traceback \(most recent call last\):")


def _message_from_worker(text: str, name: str) -> str | None:
    """The original message in torch's re-raised worker error text, or None if `text` is no such text."""
    header = _WORKER_HEADER.match(text)
    if header is None or header.group(1) != name:
        return None
    # The traceback's last "module.Name: message" line starts the message (and the notes after it); with chained
    # exceptions the last such line is the one raised.
    lines = list(re.finditer(rf"^(?:[\w.]+\.)?{re.escape(name)}: ", text, re.MULTILINE))
    return text[lines[-1].end():].strip() if lines else None


class ConfigError(AugbenchError, ValueError):
    """A config that cannot be used."""


class CheckpointError(AugbenchError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class DataError(AugbenchError, ValueError):
    """A dataset or image that cannot be read, or a label that does not exist."""


class DivergedError(AugbenchError, FloatingPointError):
    """The loss became NaN or infinite; training stopped before the bad step changed any weight."""

    def __init__(self, step: int, loss: float, last_checkpoint: str | None = None):
        self.step, self.loss, self.last_checkpoint = step, loss, last_checkpoint
        where = f"last good checkpoint: {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
        super().__init__(f"loss is {loss} at step {step}; training stopped ({where})")


class PreemptedError(Exception):
    """SIGTERM (a scheduler's preemption, `timeout`, `docker stop`) ended a run before it finished; its last
    checkpoint was saved and running the same command resumes it. The command line exits with 143 (128 + SIGTERM),
    the status a process killed by SIGTERM reports, so `augbench pretrain ... && next-step` stops there."""

    exit_status = 143
# The lines of torch's weights-only error that are advice to the reader, not the reason: "Re-running `torch.load`
# with `weights_only` set to `False` will likely succeed" (the opposite of what a refused file calls for), how to
# allowlist globals, where the documentation is. torch has moved the reason among them from release to release
# (2.6: after "WeightsUnpickler error:"; 2.14: on a line of its own, "Trying to load unsupported GLOBAL …"), so the
# reason is found by what it says, not where it stands.
_ADVICE = re.compile(r"weights_only|Weights only load failed|add_safe_globals|safe_globals|trust|documentation of "
                     r"torch\.load|file an issue|two options|steps in the following", re.IGNORECASE)


def weights_only_reason(error: Exception) -> str:
    """What the file asked for, from torch's long weights-only message, without torch's advice to load it unsafely."""
    text = str(error)
    called = re.search(r"GLOBAL\s+([\w.]+)", text)  # "GLOBAL posix.system", "Unsupported global: GLOBAL exec"
    if called:
        return (f"it asks for GLOBAL {called.group(1)}, which is neither a tensor nor plain data; a weights-only load "
                "never calls such a global, since that is how a malicious checkpoint runs code (if you trust the file, "
                "load it where it came from and save its state_dict alone)")
    unpickler = re.search(r"WeightsUnpickler error:[ \t]*(.*?)(?:\. Please|\n\s*\n\s*Check|$)", text, re.DOTALL)
    if unpickler and unpickler.group(1).strip():
        detail = " ".join(unpickler.group(1).split())
        return f"it holds something other than tensors and plain data ({detail})"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not _ADVICE.search(line)]
    return f"{type(error).__name__}: {lines[0] if lines else 'no reason given'}"
