import resource
import sys

import pytest
import torch

from augbench.train.memory import keep_freed_memory

LARGE = 16 * 2**20  # float32 elements: 64 MB, above glibc's largest adaptive mmap threshold (32 MB)


def _page_faults_of_fresh_tensors(count: int) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(count):
        torch.empty(LARGE).fill_(1.0)  # freed at once: the next one may reuse its memory
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_kept_memory_serves_the_next_tensor_without_faulting_its_pages_in_again():
    if not keep_freed_memory():
        pytest.skip("this C library has no glibc mallopt")
    # The heap grows to hold such tensors once; the first few land on parts of it not touched yet.
    _page_faults_of_fresh_tensors(8)
    pages = LARGE * 4 // resource.getpagesize()
    # glibc's defaults mmap every 64 MB tensor afresh: a fault per page, 16,384 pages per tensor.
    assert _page_faults_of_fresh_tensors(4) < pages // 10
