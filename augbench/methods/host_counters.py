"""Integer buffers (step counters, a queue's fill level) read on the host from a copy kept there.

`int(buffer)` of a CUDA buffer waits for every kernel queued before it; read
once a step, it leaves the GPU idle while the host prepares the next step. A
counter the host itself advances needs no such wait: its copy is read from
the buffer once, at the first read after construction or a state-dict load
(a resume), and advanced with the buffer from then on. The buffer stays what
checkpoints carry.
"""

from __future__ import annotations


class HostCounters:
    """Mixin for an `nn.Module` whose integer buffers the host reads: `host_int(name)` reads, `set_host_int(name,
    value)` follows an update the module made to the buffer."""

    def host_int(self, name: str) -> int:
        copies = self.__dict__.setdefault("_host_copies", {})
        if name not in copies:
            copies[name] = int(getattr(self, name))
        return copies[name]

    def set_host_int(self, name: str, value: int) -> None:
        self.__dict__.setdefault("_host_copies", {})[name] = value

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.__dict__.pop("_host_copies", None)  # the buffers hold the loaded values now
