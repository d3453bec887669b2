import copy

import pytest
import torch

from augbench.methods.momentum import cosine_momentum, ema_update
from augbench.methods.queue import Queue


def test_ema_update_moves_parameters_and_leaves_buffers():
    online = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
        online[1].running_mean.fill_(5.0)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, momentum=0.9)
    for old, new, source in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * source)
    assert torch.equal(target[1].running_mean, torch.zeros(3))


def test_cosine_momentum_schedule_endpoints_and_midpoint():
    assert cosine_momentum(0.996, 1.0, 0.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 1.0, 0.5) == pytest.approx(0.998)
    assert cosine_momentum(0.996, 1.0, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.999, 0.999, 0.3) == pytest.approx(0.999)


def test_queue_wraps_around_and_keeps_the_newest_keys():
    queue = Queue(size=5, dim=2)
    keys = torch.nn.functional.normalize(torch.randn(12, 2), dim=1)
    for start in range(0, 12, 3):
        queue.push(keys[start : start + 3])
    # 12 keys into 5 slots: slots hold keys 10, 11, 7, 8, 9 (pointer at 12 % 5 = 2).
    assert torch.allclose(queue.keys, keys[[10, 11, 7, 8, 9]])
    assert queue.pointer.item() == 2


def test_an_empty_queue_returns_only_the_keys_pushed_so_far():
    queue = Queue(size=4, dim=3, init="empty")
    assert queue.negatives().shape == (0, 3)
    queue.push(torch.randn(3, 3))
    assert queue.negatives().shape == (3, 3)
    queue.push(torch.randn(3, 3))
    assert queue.negatives().shape == (4, 3)


def test_a_random_queue_starts_full_of_unit_keys_as_mocos_builder():
    queue = Queue(size=64, dim=8)
    negatives = queue.negatives()
    assert negatives.shape == (64, 8)
    assert torch.allclose(negatives.norm(dim=1), torch.ones(64))
    assert negatives.std(dim=0).min() > 0.1  # drawn, not one repeated vector


def test_an_unknown_queue_init_is_refused_naming_the_value():
    with pytest.raises(ValueError, match=r"queue_init='zeros': expected one of \('random', 'empty'\)"):
        Queue(size=4, dim=3, init="zeros")


def test_queue_is_in_the_state_dict():
    queue = Queue(size=4, dim=3)
    assert set(queue.state_dict()) == {"keys", "pointer", "filled"}


def test_the_queues_host_copy_of_its_fill_level_follows_pushes_wraparound_and_loads():
    queue = Queue(10, 4, init="empty")
    for count in (3, 4, 5, 12, 2):
        queue.push(torch.randn(count, 4))
        assert queue.host_int("filled") == int(queue.filled) == len(queue.negatives())
    fresh = Queue(10, 4, init="empty")
    assert fresh.host_int("filled") == 0  # read once from the buffer, then kept on the host
    fresh.load_state_dict(queue.state_dict())  # a resume: the copy is read again from the loaded buffer
    assert fresh.host_int("filled") == 10 and torch.equal(fresh.negatives(), queue.negatives())
