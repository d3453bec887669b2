"""The design space's losses and momentum target agree with lightly's, an independent implementation.

lightly is a test dependency only (augbench never imports it); these checks
complement the NumPy transcriptions of the papers in test_losses.py.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augbench.methods.losses import cross_correlation, info_nce, normalized_mse, nt_xent
from augbench.methods.momentum import cosine_momentum, ema_update

lightly_loss = pytest.importorskip("lightly.loss")


@pytest.mark.parametrize(("seed", "temperature"), [(0, 0.2), (1, 0.07), (2, 0.5)])
def test_info_nce_over_a_queue_is_lightlys_ntxent_with_a_memory_bank(seed, temperature):
    generator = torch.Generator().manual_seed(seed)
    query, key = torch.randn(2, 12, 16, generator=generator)
    queue = F.normalize(torch.randn(40, 16, generator=generator), dim=1)
    theirs = lightly_loss.NTXentLoss(temperature=temperature, memory_bank_size=(40, 16))
    theirs.memory_bank.bank.copy_(queue)
    # A query without gradient leaves lightly's bank as it is, so it holds exactly our negatives.
    assert torch.allclose(info_nce(query, key, queue, temperature), theirs(query, key), atol=1e-5)


@pytest.mark.parametrize(("seed", "temperature"), [(0, 0.1), (1, 0.5)])
def test_symmetrised_nt_xent_is_lightlys_ntxent_over_the_batch(seed, temperature):
    z1, z2 = torch.randn(2, 10, 16, generator=torch.Generator().manual_seed(seed))
    ours = (nt_xent(z1, z2, temperature) + nt_xent(z2, z1, temperature)) / 2
    assert torch.allclose(ours, lightly_loss.NTXentLoss(temperature=temperature)(z1, z2), atol=1e-5)


def test_normalized_mse_is_two_plus_twice_lightlys_negative_cosine_similarity():
    prediction, target = torch.randn(2, 10, 16, generator=torch.Generator().manual_seed(0))
    theirs = lightly_loss.NegativeCosineSimilarity()(prediction, target)
    assert torch.allclose(normalized_mse(prediction, target), 2 + 2 * theirs, atol=1e-6)


@pytest.mark.parametrize(("seed", "batch", "dim", "weight"), [(0, 24, 16, 0.0051), (1, 9, 32, 0.005), (2, 32, 8, 1.0)])
def test_cross_correlation_is_lightlys_barlow_twins_loss_in_float64_gradients_included(seed, batch, dim, weight):
    generator = torch.Generator().manual_seed(seed)
    z_a, z_b = 3 * torch.randn(2, batch, dim, generator=generator, dtype=torch.float64) + 1
    ours_inputs = [z.clone().requires_grad_() for z in (z_a, z_b)]
    theirs_inputs = [z.clone().requires_grad_() for z in (z_a, z_b)]
    ours = cross_correlation(*ours_inputs, off_diagonal_weight=weight)
    theirs = lightly_loss.BarlowTwinsLoss(lambda_param=weight)(*theirs_inputs)
    ours.backward()
    theirs.backward()
    assert ours.dtype == torch.float64 and abs(ours.item() - theirs.item()) <= 1e-12 * theirs.item()
    for mine, lightlys in zip(ours_inputs, theirs_inputs, strict=True):
        assert torch.allclose(mine.grad, lightlys.grad, rtol=1e-12, atol=1e-15)


def test_the_momentum_schedule_and_ema_update_are_lightlys():
    from lightly.models.utils import update_momentum
    from lightly.utils.scheduler import cosine_schedule

    steps = 50
    for step in range(steps):  # lightly reaches the final value at step steps − 1
        assert cosine_momentum(0.99, 1.0, step / (steps - 1)) == pytest.approx(cosine_schedule(step, steps, 0.99, 1.0))
    torch.manual_seed(0)
    online, target = nn.Linear(8, 4), nn.Linear(8, 4)
    theirs = copy.deepcopy(target)
    ema_update(target, online, 0.9)
    update_momentum(online, theirs, 0.9)
    for ours, expected in zip(target.parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(ours, expected, atol=1e-7)
