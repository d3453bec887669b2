import copy
from dataclasses import replace

import pytest
import torch

from augbench.augment.hai import HierarchicalStrength, hai_ops, weakened
from augbench.augment.kinds import build_views
from augbench.augment.recipes import TwoViewConfig
from augbench.config import shipped_config
from augbench.errors import ConfigError
from augbench.methods import build_method
from augbench.methods.losses import cross_correlation, info_nce, normalized_mse
from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.models.taps import forward_to_stage
from augbench.train.config import load_config, read_status
from augbench.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES

PRESETS = ("hai_moco_v2", "hai_byol", "hai_simclr", "hai_simsiam", "hai_barlow_twins")
# Four stages of full-width projectors and predictors are most of a tiny HAI model's cost: narrow them for tests.
SMALL_HEADS = [
    "method.base_method.queue_size=32",
    "method.base_method.projector.hidden_dim=128",
    "method.base_method.projector.out_dim=64",
    "method.base_method.predictor.hidden_dim=128",
    "method.embedding.dim=32",
]


def _method(preset: str, *overrides: str):
    config, _ = load_config(shipped_config(f"methods/{preset}.yaml"), [*SMALL_HEADS, "model.width=0.125", *overrides])
    return build_method(config.method, build_backbone(config.model), config.augment), config


def _views(config, batch=8, seed=0):
    recipe = build_views(config.augment, 32, config.method)
    return recipe(torch.rand(batch, 3, 32, 32), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_give_a_finite_loss_that_is_the_weighted_sum_of_the_stage_losses(preset):
    method, config = _method(preset, "method.loss_weights=[1.0,2.0,0.5,1.0]")
    out = method(_views(config))
    stage_losses = torch.stack([out[f"loss_stage{s}"] for s in (1, 2, 3, 4)])
    assert torch.isfinite(out["loss"])
    assert torch.allclose(out["loss"], (torch.tensor([1.0, 2.0, 0.5, 1.0]) * stage_losses).sum(), atol=1e-5)


def test_stage_taps_run_the_backbone_only_as_deep_as_needed():
    backbone = build_backbone(BackboneConfig(width=0.125)).eval()
    images = torch.rand(2, 3, 32, 32)
    maps = backbone.forward_stages(images)
    for stage in (1, 2, 3):
        assert torch.equal(forward_to_stage(backbone, images, stage), maps[stage - 1])
    calls = []
    backbone.layer3.register_forward_hook(lambda *args: calls.append("layer3"))
    forward_to_stage(backbone, images, 2)
    assert calls == []


def test_the_moco_stage_loss_is_infonce_of_that_stage_with_its_own_queue():
    method, config = _method("hai_moco_v2")
    method.eval()  # BN on running statistics so the forward passes below repeat exactly
    views = _views(config)
    for queue in method.queues:
        queue.push(torch.randn(20, 64))
    banks = [queue.negatives() for queue in method.queues]
    out = method(views)
    with torch.no_grad():
        for index, stage in enumerate((1, 2, 3, 4)):
            query_view, key_view = views[2 * index], views[2 * index + 1]
            vectors = [method._vector(v) for v in (query_view, key_view)]
            q = method.branches[index](forward_to_stage(method.backbone, query_view.images, stage), vectors[0])
            k = method.target_branches[index](forward_to_stage(method.target_backbone, key_view.images, stage),
                                              vectors[1])
            expected = info_nce(q, k, banks[index], config.method.base_method.temperature)
            assert torch.allclose(out[f"loss_stage{stage}"], expected, atol=1e-5), stage
    assert [int(queue.pointer) for queue in method.queues] == [28, 28, 28, 28]


def test_the_barlow_twins_stage_loss_is_the_cross_correlation_of_that_stages_pair_through_one_network():
    method, config = _method("hai_barlow_twins")
    assert not hasattr(method, "target_backbone")
    views = _views(config, batch=16)
    out = method(views)
    with torch.no_grad():  # train mode: the same batches give the same BatchNorm statistics
        for index, stage in enumerate((1, 2, 3, 4)):
            z = [method.branches[index](forward_to_stage(method.backbone, view.images, stage), method._vector(view))
                 for view in views[2 * index : 2 * index + 2]]
            expected = cross_correlation(z[0], z[1], config.method.base_method.off_diagonal_weight)
            assert torch.allclose(out[f"loss_stage{stage}"], expected, rtol=1e-4), stage


@pytest.mark.parametrize(("enqueue", "pushed"), [("one_view", 8), ("all", 16)])
def test_a_symmetric_moco_stage_enqueues_as_method_enqueue_says(enqueue, pushed):
    method, config = _method("hai_moco_v2", "method.base_method.symmetric=true",
                             f"method.base_method.enqueue={enqueue}", "method.base_method.queue_size=64")
    method(_views(config))
    assert [int(queue.pointer) for queue in method.queues] == [pushed] * 4


@pytest.mark.parametrize(("preset", "online_passes_per_stage"), [("hai_moco_v2", 1), ("hai_byol", 2)])
def test_the_online_backbone_runs_only_on_the_views_each_stage_loss_reads(preset, online_passes_per_stage):
    method, config = _method(preset)
    passes = []
    method.backbone.conv1.register_forward_hook(lambda module, inputs, output: passes.append(inputs[0]))
    method(_views(config))
    assert len(passes) == 4 * online_passes_per_stage


def test_expanded_views_feed_each_views_colour_factors_to_the_embedded_stages_only():
    method, config = _method("hai_simclr")
    method.eval()
    views = _views(config)
    altered = copy.deepcopy(views)
    for view in altered:
        view.params["color_jitter"]["factors"] = torch.rand_like(view.params["color_jitter"]["factors"])
    with torch.no_grad():
        for index, stage in enumerate((1, 2, 3, 4)):
            feature_map = forward_to_stage(method.backbone, views[2 * index].images, stage)
            before = method.branches[index](feature_map, method._vector(views[2 * index]))
            after = method.branches[index](feature_map, method._vector(altered[2 * index]))
            assert torch.equal(before, after) == (stage == 1), stage  # stage 1 has no embedding
    assert method.branches[1].embedder[0].in_features == 4
    assert method.branches[1].projector[0].in_features == method.backbone.out_dim + 32


def test_byol_base_trains_no_target_and_moves_the_ema_of_heads_and_embeddings():
    method, config = _method("hai_byol")
    method(_views(config))["loss"].backward()
    assert all(p.grad is None for p in method.target_branches.parameters())
    assert all(p.grad is not None for p in method.branches[1].embedder.parameters())
    with torch.no_grad():
        for p in method.branches.parameters():
            p.add_(1.0)
    before = method.target_branches[2].embedder[0].weight.clone()
    assert method.update_target(0.0)["momentum"] == pytest.approx(0.99)
    online = method.branches[2].embedder[0].weight
    assert torch.allclose(method.target_branches[2].embedder[0].weight, before + 0.01 * (online - before), atol=1e-6)


def test_an_augmentation_assigned_to_no_stage_is_left_out_of_every_pair():
    _, config = _method("hai_moco_v2", "augment.assignment.flip=null", "augment.assignment.rotate90=2")
    views = _views(config, batch=64)
    assert not any(view.params["flip"]["applied"].any() for view in views)
    assert [bool(view.params["rotate90"]["applied"].any()) for view in views] == [False] * 2 + [True] * 6


def test_the_uniform_ablation_applies_the_whole_pipeline_at_every_stage():
    hierarchical, _ = load_config(shipped_config("methods/hai_simsiam.yaml"))
    uniform, _ = load_config(shipped_config("methods/hai_simsiam_uniform.yaml"))
    assert uniform.augment.assignment != hierarchical.augment.assignment
    assert replace(uniform.augment, assignment=hierarchical.augment.assignment) == hierarchical.augment
    assert uniform.method == hierarchical.method
    _, config = _method("hai_simsiam_uniform")
    views = _views(config, batch=64)
    for op in ("grayscale", "flip"):  # assigned to stages 2 and 4 in the hierarchy
        assert all(view.params[op]["applied"].any() for view in views), op


def test_a_weakened_op_follows_the_supplements_rule_per_level():
    crop, jitter, grayscale, blur, flip, rotate = hai_ops(64, crop_scale=(0.2, 1.0))
    rule = HierarchicalStrength(enabled=True)
    # Stage 1, level L = 3: crop minimum scale +0.1·L, jitter factors −0.02·L, every probability −0.05·L.
    assert weakened(crop, 3, rule).scale == pytest.approx((0.5, 1.0))
    weak_jitter = weakened(jitter, 3, rule)
    assert (weak_jitter.brightness, weak_jitter.contrast, weak_jitter.saturation, weak_jitter.hue, weak_jitter.p) == \
        pytest.approx((0.34, 0.34, 0.34, 0.04, 0.65))
    for op in (grayscale, blur, flip, rotate):
        assert weakened(op, 3, rule).p == pytest.approx(max(0.0, op.p - 0.15))
    assert weakened(grayscale, 0, rule).p == grayscale.p  # the deepest stage sees the full pipeline
    assert jitter.brightness == 0.4 and crop.scale == (0.2, 1.0)  # the originals are untouched


def test_hierarchical_strength_weakens_the_shallow_stages_pairs_by_the_supplements_rule():
    uniform, _ = load_config(shipped_config("methods/hai_simsiam_uniform.yaml"))
    strength, _ = load_config(shipped_config("methods/hai_simsiam_strength.yaml"))
    assert replace(strength.augment, hierarchical_strength=HierarchicalStrength()) == uniform.augment
    assert strength.augment.hierarchical_strength == HierarchicalStrength(True, 0.05, 0.02, 0.1)
    assert strength.method == uniform.method
    _, config = _method("hai_simsiam_strength")
    views = _views(config, batch=256)
    shallow, deep = views[0].params, views[6].params
    # Stage 1: brightness 0.4 − 0.06 = 0.34, crop scale ≥ 0.2 + 0.3; stage 4: the full 0.4 and 0.2.
    assert 0.3 < (shallow["color_jitter"]["factors"][:, 0] - 1).abs().max() <= 0.34 + 1e-6
    assert (deep["color_jitter"]["factors"][:, 0] - 1).abs().max() > 0.34
    areas = [(box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]) for box in (shallow["crop"]["box"], deep["crop"]["box"])]
    assert areas[0].min() >= 0.5 - 1e-6 and areas[1].min() < 0.5
    with pytest.raises(ConfigError, match=r"hierarchical_strength.jitter=-0.02: a step per level, not negative"):
        load_config(shipped_config("methods/hai_simsiam.yaml"), ["augment.hierarchical_strength.jitter=-0.02"])


def test_hai_over_byol_has_the_supplements_heads_and_momentum():
    base = load_config(shipped_config("methods/hai_byol.yaml"))[0].method.base_method
    # Supplement §B: projector out 2048, predictor 2048-512-2048, target EMA 0.99.
    assert base.projector.out_dim == 2048 and base.predictor.hidden_dim == 512
    assert (base.momentum.base, base.momentum.final) == (0.99, 0.99)
    method, _ = _method("hai_byol", "method.base_method.projector.out_dim=2048",
                        "method.base_method.predictor.hidden_dim=512")
    predictor = method.predictors[0]
    assert [layer.out_features for layer in predictor if isinstance(layer, torch.nn.Linear)] == [512, 2048]


def test_hai_over_simsiam_has_the_official_projector_and_zero_initialised_residual_bns():
    config, _ = load_config(shipped_config("methods/hai_simsiam.yaml"), ["model.width=0.125"])
    method = build_method(config.method, build_backbone(config.model), config.augment)
    projector = method.branches[3].projector
    norms = [layer for layer in projector if isinstance(layer, torch.nn.BatchNorm1d)]
    assert len([layer for layer in projector if isinstance(layer, torch.nn.Linear)]) == 3
    assert len(norms) == 3 and norms[-1].affine  # HAI's builder.py: the output BN has weight and bias
    residual_bns = [block.bn2.weight for layer in (method.backbone.layer1, method.backbone.layer4) for block in layer]
    assert all(torch.all(weight == 0) for weight in residual_bns)


def test_the_least_spread_stage_is_reported_for_the_collapse_check():
    method, config = _method("hai_simsiam")
    views = _views(config)
    out = method(views)
    with torch.no_grad():
        spreads = []
        for index, stage in enumerate(config.method.stages):
            head = method.branches[index].head(forward_to_stage(method.backbone, views[2 * index].images, stage))
            projection = method.branches[index].project(head, method._vector(views[2 * index]))
            spreads.append(torch.nn.functional.normalize(projection, dim=1).std(dim=0).mean())
    assert out["embedding_std"].item() == pytest.approx(min(spreads).item(), rel=1e-4)


def test_the_encoder_is_the_backbone():
    method, _ = _method("hai_simsiam")
    assert method.encoder() is method.backbone


def test_an_assignment_naming_a_missing_stage_stops_at_config_load():
    path = shipped_config("methods/hai_moco_v2.yaml")
    with pytest.raises(ConfigError, match=r"augment: assignment\.grayscale=5: stages are 1 to 4 \(null: none\)"):
        load_config(path, ["augment.assignment.grayscale=5"])
    with pytest.raises(ConfigError, match=r"augment\.assignment\.crop=1: names stage 1, which has no tap; "
                                          r"method\.stages=\[2, 3, 4\]"):
        load_config(path, ["method.stages=[2,3,4]", "method.loss_weights=[1,1,1]", "method.embedding.stages=[]"])
    with pytest.raises(ConfigError, match=r"augment: assignment\.sharpen: unknown augmentation"):
        load_config(path, ["augment.assignment.sharpen=2"])
    with pytest.raises(ConfigError, match=r"embedding\.params=\['hue_bin'\]"):
        load_config(path, ["method.embedding.params=[hue_bin]"])
    with pytest.raises(ConfigError, match=r"embedding\.params=\['solarize'\]"):  # no HAI view records it
        load_config(path, ["method.embedding.params=[solarize]"])
    with pytest.raises(ConfigError, match=r"loss_weights=\[1.0\]: expected one weight per stage"):
        load_config(path, ["method.loss_weights=[1.0]"])


def test_hai_needs_its_own_views_and_a_staged_backbone():
    method, config = _method("hai_moco_v2")
    two_views = TwoViewConfig(recipe="moco_v2_32").build(32)(torch.rand(4, 3, 32, 32), torch.Generator())
    with pytest.raises(ValueError, match=r"2 views per stage .* got 2; set augment.views=hierarchical"):
        method(two_views)
    with pytest.raises(ValueError, match="stage-wise methods need an augbench ResNet"):
        build_method(config.method, build_backbone(BackboneConfig(name="mobilenet_v3_small", cifar_stem=False)))


@pytest.mark.parametrize("preset", PRESETS)
def test_two_pretraining_steps_per_hai_preset(preset, tmp_path):
    config, _ = load_config(
        shipped_config(f"methods/{preset}.yaml"),
        [*TINY_OVERRIDES, *SMALL_HEADS, f"output_dir={tmp_path}", f"name={preset}"],
    )
    run = pretrain(config)
    status = read_status(run.directory)
    assert status["state"] == "finished" and status["steps"] == 2
    assert {f"train/loss_stage{s}" for s in (1, 2, 3, 4)} <= set(status["metrics"])
    assert run.encoder(torch.rand(2, 3, 32, 32)).shape == (2, run.encoder.out_dim)


def test_a_target_predictor_per_stage_follows_its_online_predictor():
    method, config = _method("hai_byol", "method.base_method.target_predictor=true",
                             "method.base_method.pair_reduction=mean")
    assert len(method.target_predictors) == len(config.method.stages)
    method.eval()  # BN on running statistics, so the stage loss below repeats the method's exactly
    views = _views(config)
    stage_loss, *_ = method._stage_loss(1, config.method.stages[1], views[2:4])
    with torch.no_grad():
        pair = views[2:4]
        vectors = [method._vector(view) for view in pair]
        stage = config.method.stages[1]
        q = [method.predictors[1](method.branches[1](forward_to_stage(method.backbone, v.images, stage), vec))
             for v, vec in zip(pair, vectors)]
        k = [method.target_predictors[1](
            method.target_branches[1](forward_to_stage(method.target_backbone, v.images, stage), vec))
            for v, vec in zip(pair, vectors)]
    assert torch.allclose(stage_loss, (normalized_mse(q[0], k[1]) + normalized_mse(q[1], k[0])) / 2, atol=1e-6)
    with torch.no_grad():
        for p in method.predictors.parameters():
            p.add_(1.0)
    before = method.target_predictors[3][0].weight.clone()
    method.update_target(0.0)
    online = method.predictors[3][0].weight
    assert torch.allclose(method.target_predictors[3][0].weight, before + 0.01 * (online - before), atol=1e-6)
