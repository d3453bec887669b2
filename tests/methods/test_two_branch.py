import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from augbench.augment.views import View
from augbench.config import shipped_config
from augbench.errors import ConfigError
from augbench.methods import build_method
from augbench.methods.losses import info_nce, normalized_mse
from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.train.config import load_config

PRESETS = ("moco_v2", "byol", "simclr", "simsiam")


def _method(preset: str, *overrides: str):
    config, _ = load_config(shipped_config(f"methods/{preset}.yaml"), ["method.queue_size=32", *overrides])
    backbone = build_backbone(BackboneConfig(width=0.125))
    return build_method(config.method, backbone), config.method


def _views(batch=8):
    images = torch.rand(2, batch, 3, 16, 16)
    return [View(images[0], {}), View(images[1], {})]


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_return_a_finite_loss_and_named_logs(preset):
    method, _ = _method(preset)
    out = method(_views())
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert {"positive_similarity", "embedding_std"} <= set(out)


def test_momentum_target_gets_no_gradient_and_follows_the_online_network():
    method, _ = _method("byol")
    method(_views())["loss"].backward()
    assert all(p.grad is None for p in method.target_backbone.parameters())
    assert any(p.grad is not None for p in method.backbone.parameters())
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    before = next(method.target_backbone.parameters()).clone()
    logs = method.update_target(progress=0.0)
    after = next(method.target_backbone.parameters())
    assert logs["momentum"] == pytest.approx(0.99)
    assert torch.allclose(after, before + 0.01 * (next(method.backbone.parameters()) - before), atol=1e-6)


def test_simsiam_is_the_official_symmetric_negative_cosine():
    torch.manual_seed(0)
    method, _ = _method("simsiam")
    views = _views()
    loss = method(views)["loss"]
    with torch.no_grad():
        z1, z2 = (method.projector(method.backbone(view.images)) for view in views)
        p1, p2 = method.predictor(z1), method.predictor(z2)
    # Chen & He (2021), Algorithm 1: L = D(p1, z2) / 2 + D(p2, z1) / 2 with D(p, z) = −cos(p, z.detach()).
    official = -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2
    assert loss.item() == pytest.approx(official.item(), abs=1e-5)


def test_byol_momentum_reaches_one_at_the_end():
    method, _ = _method("byol")
    assert method.update_target(progress=1.0)["momentum"] == pytest.approx(1.0)


def test_simclr_backpropagates_through_both_views_and_simsiam_stops_the_target():
    def gradient_from_key_view(preset):
        method, _ = _method(preset)
        views = _views()
        views[1].images.requires_grad_(True)
        z0 = method.projector(method.backbone(views[0].images))
        z1 = method.projector(method.backbone(views[1].images))
        keys = method._target_embeddings(views, {0: z0, 1: z1}, {1})
        loss = method._pair_loss(method.predictor(z0), keys[1])
        loss.backward()
        return views[1].images.grad

    assert gradient_from_key_view("simclr") is not None
    assert gradient_from_key_view("simsiam") is None


def test_moco_enqueues_the_keys_of_each_step():
    method, _ = _method("moco_v2")
    before = method.queue.keys.clone()
    method(_views(batch=8))
    assert method.queue.pointer.item() == 8
    assert not torch.equal(method.queue.keys[:8], before[:8]) and torch.equal(method.queue.keys[8:], before[8:])


@pytest.mark.parametrize(("enqueue", "pushed"), [("one_view", 8), ("all", 16)])
@pytest.mark.parametrize(("reduction", "scale"), [("mean", 0.5), ("sum", 1.0)])
def test_symmetric_loss_combines_both_directions_by_the_pair_reduction(enqueue, pushed, reduction, scale):
    method, config = _method("moco_v2", "method.symmetric=true", f"method.enqueue={enqueue}",
                             f"method.pair_reduction={reduction}")
    method.eval()  # BN on running statistics, so the forward passes below repeat exactly
    views = _views()
    method.queue.push(torch.randn(20, method.queue.keys.shape[1]))
    queue = method.queue.negatives()
    out = method(views)
    with torch.no_grad():
        q = [method.projector(method.backbone(v.images)) for v in views]
        k = [method.target_projector(method.target_backbone(v.images)) for v in views]
    t = config.temperature
    expected = scale * (info_nce(q[0], k[1], queue, t) + info_nce(q[1], k[0], queue, t))
    assert torch.allclose(out["loss"], expected, atol=1e-6)
    assert method.queue.pointer.item() == (20 + pushed) % 32


@pytest.mark.parametrize("preset", ["methods/byol", "fair/06_symmetric_loss", "fair/07_no_negatives"])
def test_byol_and_the_studys_symmetric_points_sum_the_two_directions(preset):
    # revisitAIRL exp/mocov2_plus.py and exp/byol.py, and BYOL's paper (L + L~): the sum, twice the mean's step.
    config, _ = load_config(shipped_config(f"{preset}.yaml"), ["method.queue_size=32"])
    method = build_method(config.method, build_backbone(BackboneConfig(width=0.125))).eval()
    views = _views()
    queue = method.queue.negatives() if config.method.negatives == "queue" else None
    out = method(views)
    with torch.no_grad():
        q = [method.predictor(method.projector(method.backbone(v.images))) for v in views]
        k = [method.target_projector(method.target_backbone(v.images)) for v in views]
    if queue is None:
        expected = normalized_mse(q[0], k[1]) + normalized_mse(q[1], k[0])
    else:
        expected = info_nce(q[0], k[1], queue, 0.2) + info_nce(q[1], k[0], queue, 0.2)
    assert torch.allclose(out["loss"], expected, atol=1e-6)


def test_an_unknown_pair_reduction_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"byol\.yaml.*method: pair_reduction='max': expected one of"):
        _method("byol", "method.pair_reduction=max")


@pytest.mark.parametrize("init", ["random", "empty"])
def test_mocos_first_step_contrasts_against_random_unit_keys_or_against_nothing(init):
    method, config = _method("moco_v2", "method.queue_size=4096", f"method.queue_init={init}")
    method.eval()  # BN on running statistics, so the forward passes below repeat exactly
    views = _views()
    negatives = method.queue.negatives().double()
    out = method(views)
    out["loss"].backward()
    gradients = [p.grad for p in method.parameters() if p.requires_grad]
    if init == "empty":  # a positive alone: the loss and every gradient are 0 at step 1
        assert negatives.shape[0] == 0 and out["loss"].item() == 0
        assert all(g is None or torch.all(g == 0) for g in gradients)
        return
    with torch.no_grad():
        q = F.normalize(method.projector(method.backbone(views[0].images)).double(), dim=1).numpy()
        k = F.normalize(method.target_projector(method.target_backbone(views[1].images)).double(), dim=1).numpy()
    t = config.temperature
    positive = (q * k).sum(axis=1) / t
    logits = np.concatenate([positive[:, None], q @ negatives.numpy().T / t], axis=1)
    expected = np.mean(np.log(np.exp(logits).sum(axis=1)) - positive)
    assert negatives.shape[0] == 4096
    assert out["loss"].item() == pytest.approx(expected, abs=1e-4)
    # Random unit keys in 128-d are near-orthogonal to q: the loss is about ln(K + e^{q·k/τ}) − q·k/τ, ln(K) ± 1/τ.
    assert abs(out["loss"].item() - np.log(4096)) < 1 / t
    assert any(g is not None and g.abs().sum() > 0 for g in gradients)


def _enqueued_views(method, steps: int) -> list[int]:
    """Which view's keys each of `steps` forward passes pushed into the queue."""
    method.eval()  # BN on running statistics, so the keys below are the ones the step computed
    enqueued = []
    for _ in range(steps):
        views = _views()
        start = method.queue.pointer.item()
        method(views)
        with torch.no_grad():
            keys = [F.normalize(method.target_projector(method.target_backbone(v.images)), dim=1) for v in views]
        pushed = method.queue.keys[start : start + len(keys[0])]
        enqueued.append(next(j for j, k in enumerate(keys) if torch.allclose(pushed, k, atol=1e-6)))
    return enqueued


def test_symmetric_moco_enqueues_one_views_keys_per_step_drawn_by_the_seed():
    method, _ = _method("moco_v2", "method.symmetric=true", "method.queue_size=512")
    torch.manual_seed(0)
    enqueued = _enqueued_views(method, steps=12)
    assert method.queue.pointer.item() == 12 * 8
    assert set(enqueued) == {0, 1}  # both views take turns, as the study's random pick does
    again, _ = _method("moco_v2", "method.symmetric=true", "method.queue_size=512")
    again.load_state_dict(method.state_dict())
    again.queue.pointer.zero_()
    torch.manual_seed(0)
    assert _enqueued_views(again, steps=12) == enqueued


def test_one_way_moco_enqueues_without_drawing_from_the_global_generator():
    method, _ = _method("moco_v2")
    views = _views()
    torch.manual_seed(0)
    method(views)
    after_step = torch.get_rng_state()
    torch.manual_seed(0)
    assert torch.equal(torch.get_rng_state(), after_step)  # the step left torch's global generator where it was


def test_an_unknown_enqueue_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"moco_v2\.yaml.*method: enqueue='both': expected one of"):
        _method("moco_v2", "method.enqueue=both")


@pytest.mark.parametrize(("preset", "online_passes"), [("moco_v2", 1), ("byol", 2), ("simclr", 2), ("simsiam", 2)])
def test_the_online_backbone_runs_only_on_the_views_the_loss_reads(preset, online_passes):
    method, _ = _method(preset)
    passes = []
    method.backbone.register_forward_hook(lambda module, inputs, output: passes.append(inputs[0]))
    views = _views()
    method(views)
    assert len(passes) == online_passes
    assert passes[0] is views[0].images


def test_one_way_moco_takes_online_batchnorm_statistics_from_the_query_view_only():
    method, _ = _method("moco_v2")
    reference = copy.deepcopy(method.backbone)
    views = _views()
    method(views)
    reference(views[0].images)
    for ours, expected in zip(method.backbone.buffers(), reference.buffers()):
        assert torch.equal(ours, expected)


def test_two_views_are_required():
    method, _ = _method("moco_v2")
    with pytest.raises(ValueError, match="takes 2 views, got 3"):
        method(_views() + _views()[:1])


def test_a_target_predictor_is_the_ema_of_the_online_predictor_and_shapes_every_key():
    method, _ = _method("byol", "method.target_predictor=true", "method.pair_reduction=mean")
    assert all(torch.equal(t, o) for t, o in zip(method.target_predictor.parameters(), method.predictor.parameters()))
    method.eval()  # BN on running statistics, so the passes below repeat the method's exactly
    views = _views()
    out = method(views)
    with torch.no_grad():
        q = [method.predictor(method.projector(method.backbone(v.images))) for v in views]
        z = [method.target_projector(method.target_backbone(v.images)) for v in views]
        k = [method.target_predictor(key) for key in z]
    assert torch.allclose(out["loss"], (normalized_mse(q[0], k[1]) + normalized_mse(q[1], k[0])) / 2, atol=1e-6)
    without = (normalized_mse(q[0], z[1]) + normalized_mse(q[1], z[0])) / 2
    assert not torch.allclose(out["loss"], without, atol=1e-3)

    method.train()
    method(_views())["loss"].backward()
    assert all(p.grad is None for p in method.target_predictor.parameters())
    with torch.no_grad():
        for p in method.predictor.parameters():
            p.add_(1.0)
    before = method.target_predictor[0].weight.clone()
    method.update_target(progress=0.0)
    online = method.predictor[0].weight
    assert torch.allclose(method.target_predictor[0].weight, before + 0.01 * (online - before), atol=1e-6)


@pytest.mark.parametrize(("preset", "missing"), [("moco_v2", "predictor"), ("simsiam", "momentum")])
def test_a_target_predictor_needs_a_predictor_and_a_momentum_target(preset, missing):
    with pytest.raises(ConfigError, match=f"target_predictor=true: .* needs {missing}.enabled=true$"):
        _method(preset, "method.target_predictor=true")
