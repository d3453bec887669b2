"""The errors augbench raises for bad input; each message names the file, key or value at fault."""


class AugbenchError(Exception):
    """Base of augbench's input errors; the command line prints their message without a traceback."""


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
