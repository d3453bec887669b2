import numpy as np
import pytest
import torch
import torch.nn.functional as F

from augbench.augment.kinds import build_views
from augbench.config import shipped_config
from augbench.errors import ConfigError
from augbench.methods import build_method
from augbench.methods.swav import sinkhorn, swapped_prediction
from augbench.models.backbones import build_backbone
from augbench.train.config import load_config, read_status
from augbench.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES


def numpy_sinkhorn(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """SwAV's distributed_sinkhorn on one process, written from the paper's algorithm box."""
    q = np.exp(scores / epsilon).T  # (K, B)
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / b
    return (q * b).T


def _swav(*overrides: str, steps_per_epoch: int = 1):
    config, _ = load_config(shipped_config("methods/swav.yaml"), ["model.width=0.125", *overrides])
    method = build_method(config.method, build_backbone(config.model), config.augment)
    method.set_steps_per_epoch(steps_per_epoch)
    return method, config


def _views(config, batch=8, seed=0):
    recipe = build_views(config.augment, 32, config.method)
    return recipe(torch.rand(batch, 3, 32, 32), torch.Generator().manual_seed(seed))


def test_sinkhorn_matches_numpy_and_its_rows_sum_to_one():
    scores = F.normalize(torch.randn(24, 16), dim=1) @ F.normalize(torch.randn(10, 16), dim=1).T  # (B, K)
    codes = sinkhorn(scores, epsilon=0.05, iterations=3)
    expected = numpy_sinkhorn(scores.double().numpy(), 0.05, 3)
    assert np.allclose(codes.numpy(), expected, atol=1e-5)
    assert torch.allclose(codes.sum(dim=1), torch.ones(24), atol=1e-5)


def test_sinkhorn_converges_to_both_marginals():
    scores = F.normalize(torch.randn(30, 8), dim=1) @ F.normalize(torch.randn(6, 8), dim=1).T
    codes = sinkhorn(scores, epsilon=0.05, iterations=200)
    assert torch.allclose(codes.sum(dim=1), torch.ones(30), atol=1e-5)  # each sample: mass 1
    assert torch.allclose(codes.sum(dim=0), torch.full((6,), 30 / 6), atol=1e-3)  # each prototype: B / K
    few = sinkhorn(scores, epsilon=0.05, iterations=1)
    assert (few.sum(dim=0) - 5).abs().max() > (codes.sum(dim=0) - 5).abs().max()


def test_swapped_prediction_matches_numpy():
    codes = torch.softmax(torch.randn(5, 7), dim=1)
    scores = [torch.randn(5, 7) for _ in range(3)]
    loss = swapped_prediction(codes, scores, temperature=0.1)
    expected = 0.0
    for s in scores:
        logits = s.double().numpy() / 0.1
        log_softmax = logits - logits.max(axis=1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
        expected += -(codes.double().numpy() * log_softmax).sum(axis=1).mean() / len(scores)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_swav_loss_is_the_swapped_prediction_of_sinkhorn_codes_over_every_other_crop():
    method, config = _swav()
    method.eval()
    views = _views(config)
    out = method(views)
    with torch.no_grad():
        z = [F.normalize(method.projector(method.backbone(v.images)), dim=1) for v in views]
        scores = [e @ method.prototypes.weight.T for e in z]
        expected = 0.0
        for crop in (0, 1):
            codes = torch.tensor(numpy_sinkhorn(scores[crop].double().numpy(), 0.05, 3), dtype=torch.float32)
            expected += swapped_prediction(codes, [s for v, s in enumerate(scores) if v != crop], 0.1) / 2
    assert torch.allclose(out["loss"], expected, atol=1e-4)


def test_the_recipe_makes_views_of_two_sizes():
    _, config = _swav()
    assert [v.images.shape[-1] for v in _views(config)] == [32, 32, 16, 16, 16, 16]


def test_prototypes_are_frozen_for_the_first_steps_and_normalised_after_each():
    method, config = _swav("method.freeze_prototypes_epochs=0.5", steps_per_epoch=4)  # 2 steps
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    grad_norms = []
    for step in range(3):
        optimizer.zero_grad()
        method(_views(config, seed=step))["loss"].backward()
        grad_norms.append(method.prototypes.weight.grad.norm().item())
        optimizer.step()
        method.update_target(step / 3)
        assert torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(config.method.num_prototypes))
    assert grad_norms[0] == grad_norms[1] == 0.0 and grad_norms[2] > 0
    assert int(method.step) == 3 and "step" in dict(method.named_buffers())  # a counter checkpoints carry


def test_the_queue_starts_filling_after_queue_start_epochs():
    method, config = _swav("method.queue_size=16", "method.queue_start_epochs=1.5", steps_per_epoch=2)
    views = _views(config, batch=8)
    filled = []
    for _ in range(5):
        method(views)
        method.update_target(0.0)
        filled.append(int(method.queues[0].filled))
    assert filled == [0, 0, 0, 8, 16]  # steps 0-2 lie in the first 1.5 epochs of 2 steps


def test_swav_needs_the_epoch_length_for_its_epoch_counts():
    config, _ = load_config(shipped_config("methods/swav.yaml"), ["model.width=0.125"])
    method = build_method(config.method, build_backbone(config.model), config.augment)
    with pytest.raises(RuntimeError, match="call set_steps_per_epoch first"):
        method(_views(config))


def test_the_projector_normalises_every_crop_in_one_batch():
    method, config = _swav()
    views = _views(config)
    out_embeddings, _ = method._embed(views)
    with torch.no_grad():
        features = torch.cat([method.backbone(torch.cat([v.images for v in views[:2]])),
                              method.backbone(torch.cat([v.images for v in views[2:]]))])
        expected = F.normalize(method.projector(features), dim=1).split(8)
        apart = F.normalize(method.projector(features[16:]), dim=1)  # the small crops' own statistics
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out_embeddings, expected))
    assert not torch.allclose(out_embeddings[2], apart[:8], atol=1e-4)


def test_the_queue_joins_sinkhorn_once_full():
    method, config = _swav("method.queue_size=16", "method.queue_start_epochs=0")
    views = _views(config, batch=8)
    method(views)
    assert [int(q.filled) for q in method.queues] == [8, 8]
    method(views)  # the queue fills up with this step's push; the codes used only the batch
    assert [int(q.filled) for q in method.queues] == [16, 16]
    method.eval()
    bank = method.queues[0].negatives()
    with torch.no_grad():
        z0 = F.normalize(method.projector(method.backbone(views[0].images)), dim=1)
        all_scores = torch.cat([bank, z0]) @ method.prototypes.weight.T
        expected = sinkhorn(all_scores, 0.05, 3)[16:]
        codes = method._codes(0, z0 @ method.prototypes.weight.T, z0)
    assert torch.allclose(codes, expected, atol=1e-6)
    alone = sinkhorn(z0 @ method.prototypes.weight.T, 0.05, 3)
    assert not torch.allclose(codes, alone, atol=1e-4)


def test_more_crops_assigned_than_the_views_hold_stops_at_config_load():
    path = shipped_config("methods/swav.yaml")
    with pytest.raises(ConfigError, match=r"method.crops_for_assign=\[0, 6\]: must name crops among the 6 crops of "
                                          r"augment.num_crops=\[2, 4\]"):
        load_config(path, ["method.crops_for_assign=[0,6]"])
    with pytest.raises(ConfigError, match=r"method: crops_for_assign=\[0, 0\]: must name distinct crops"):
        load_config(path, ["method.crops_for_assign=[0,0]"])
    with pytest.raises(ConfigError, match=r"augment: crop_sizes=\[32\]: expected one entry per crop group"):
        load_config(path, ["augment.crop_sizes=[32]"])
    with pytest.raises(ConfigError, match=r"augment: num_crops=\[1\]: each group needs a crop and SwAV at least 2"):
        load_config(path, ["augment.num_crops=[1]", "augment.crop_sizes=[32]", "augment.min_scale=[0.14]",
                           "augment.max_scale=[1.0]", "method.crops_for_assign=[0]"])


def test_swav_refuses_views_of_another_kind():
    with pytest.raises(ConfigError, match=r"method.name=swav trains on augment.views=multi_crop, not two_view"):
        load_config(shipped_config("methods/swav.yaml"), ["augment.recipe=moco_v2_32"])
    method, config = _swav()
    with pytest.raises(ValueError, match=r"crops \[0, 1\] .* got 1 views; set augment.views=multi_crop"):
        method(_views(config)[:1])


@pytest.mark.parametrize("queue_size", [0, 32])
def test_two_pretraining_steps_of_the_swav_preset(queue_size, tmp_path):
    config, _ = load_config(
        shipped_config("methods/swav.yaml"),
        [*TINY_OVERRIDES, f"output_dir={tmp_path}", "name=swav", f"method.queue_size={queue_size}"],
    )
    run = pretrain(config)
    status = read_status(run.directory)
    assert status["state"] == "finished" and status["steps"] == 2
    assert status["metrics"]["train/prototypes_frozen"] == 1.0
    checkpoint = torch.load(run.directory / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["state_dict"]["method.step"].item() == 2


def test_the_swav_objective_agrees_with_lightlys_independent_implementation():
    lightly_swav = pytest.importorskip("lightly.loss.swav_loss")
    prototypes = F.normalize(torch.randn(12, 16), dim=1)
    scores = [F.normalize(torch.randn(8, 16), dim=1) @ prototypes.T for _ in range(6)]
    ours = torch.stack([
        swapped_prediction(sinkhorn(scores[crop], 0.05, 3), [s for v, s in enumerate(scores) if v != crop], 0.1)
        for crop in (0, 1)
    ]).mean()
    lightly_loss = lightly_swav.SwaVLoss(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)
    theirs = lightly_loss(scores[:2], scores[2:])
    assert torch.allclose(ours, theirs.squeeze(), atol=1e-5)


def test_the_preset_optimiser_is_the_official_larc_over_every_parameter_without_warm_up_at_batch_256():
    from augbench.optim import build_optimizer

    method, config = _swav()
    optimizer = build_optimizer(method, config.optim, global_batch_size=256)
    # main_swav.py: SGD(model.parameters(), weight_decay=wd) inside LARC, so BN and biases are adapted and decayed
    # too; scripts/swav_200ep_bs256_pretrain.sh: base_lr 0.6, final_lr 0.0006, wd 1e-6, no warm-up.
    assert [group["weight_decay"] for group in optimizer.param_groups] == [1e-6]
    assert len(optimizer.param_groups[0]["params"]) == len(list(method.parameters()))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.6)
    assert config.optim.warmup_epochs == 0 and config.optim.min_lr_ratio == pytest.approx(0.0006 / 0.6)
