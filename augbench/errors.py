"""The errors augbench raises for bad input; each message names the file, key or value at fault."""


class AugbenchError(Exception):
    """Base of augbench's input errors; the command line prints their message without a traceback."""


class ConfigError(AugbenchError, ValueError):
    """A config that cannot be used."""


class CheckpointError(AugbenchError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class DataError(AugbenchError, ValueError):
    """A dataset or image that cannot be read, or a label that does not exist."""
