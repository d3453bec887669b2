"""Keep freed host memory in the process, so each training step does not page-fault its tensors in again.

PyTorch's CPU allocator does not cache: every image-sized tensor (an
augmented view, an activation) is a fresh malloc. glibc serves large requests
with their own mmap, unmapped again on free, or from a heap whose free top it
hands back to the kernel, so a step's tensors arrive as new pages that the
kernel faults in and zeroes: about 28,000 minor faults and a quarter of the
time of a two-view 96-px augmentation of 256 images
(benchmarks/augment_throughput.py). The field's
cure is to LD_PRELOAD jemalloc or tcmalloc, which a library cannot do for
its user once the process runs; glibc's `mallopt` reaches the same effect
in-process, so it is called here through ctypes. The cost is a little peak
RSS: the quickstart peaked at 2.78 GB with it and 2.55 GB without, in the
same time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int: the largest one keeps every freed byte


def keep_freed_memory() -> bool:
    """Serve every allocation from glibc's heap and never return freed memory to the kernel; process-wide.

    Returns whether the settings took effect: False off Linux, or on a C
    library without glibc's `mallopt` (musl ignores it). Idempotent; it cannot
    be undone for the life of the process, which is what a training process wants.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Both or neither: fixing the trim threshold alone also freezes glibc's adaptive mmap threshold, so every large
    # tensor would be mmapped afresh (1.7x slower than the default, measured); no mmap at all keeps them in the heap.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
