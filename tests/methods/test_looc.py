from dataclasses import asdict

import numpy as np
import pytest
import torch

from augbench.augment.kinds import build_views
from augbench.augment.looc import LeaveOneOutConfig
from augbench.config import shipped_config
from augbench.errors import ConfigError
from augbench.methods import build_method
from augbench.methods.looc import LooCConfig, LooCMethod, leave_one_out_info_nce, space_masks
from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.models.io import load_encoder, save_encoder
from augbench.train.config import load_config, read_status
from augbench.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES


def _method(augmentations=("color", "rotation"), **settings) -> LooCMethod:
    config = LooCConfig(queue_size=16, **settings)
    return LooCMethod(build_backbone(BackboneConfig(width=0.125)), config, list(augmentations))


def _views(augmentations=("color", "rotation"), seed=0, batch=6):
    recipe = LeaveOneOutConfig(recipe="looc_32", augmentations=list(augmentations)).build(16)
    return recipe(torch.rand(batch, 3, 16, 16), torch.Generator().manual_seed(seed))


def test_space_masks_for_two_augmentations():
    masks = {space: space_masks(3, space) for space in range(3)}
    as_lists = {space: (p.tolist(), n.tolist()) for space, (p, n) in masks.items()}
    assert as_lists[0] == ([True, False, False], [False, False, False])  # same-image keys are never negatives in Z0
    assert as_lists[1] == ([False, True, False], [True, False, True])
    assert as_lists[2] == ([False, False, True], [True, True, False])
    assert space_masks(3, 0, "all")[0].tolist() == [True, True, True]


def test_masks_on_a_hand_built_batch():
    # One image, keys k0, k1, k2 in a 2-d space: k1 matches the query, k0 opposes it, k2 is orthogonal.
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    query, keys, empty_queue = e1[None], torch.stack([-e1, e1, e2])[None], torch.zeros(0, 2)
    loss_z1 = leave_one_out_info_nce(query, keys, empty_queue, *space_masks(3, 1), temperature=1.0)
    assert loss_z1.item() == pytest.approx(-np.log(np.e / (np.e + np.exp(-1) + 1)))
    # In Z0 the positive is k0 and, with an empty queue, nothing competes with it: the loss is 0.
    loss_z0 = leave_one_out_info_nce(query, keys, empty_queue, *space_masks(3, 0), temperature=1.0)
    assert loss_z0.item() == pytest.approx(0.0, abs=1e-7)
    # A queue entry equal to the query is one more negative.
    loss_z0_queue = leave_one_out_info_nce(query, keys, e1[None], *space_masks(3, 0), temperature=1.0)
    assert loss_z0_queue.item() == pytest.approx(-np.log(np.exp(-1) / (np.exp(-1) + np.e)))


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_looc_loss(queries, keys, queues, temperature, z0_positives, reduction):
    """queries[s] (B, D); keys[s] (B, n + 1, D); queues[s] (M, D): LooC's loss written from the paper's definitions."""
    spaces = len(queries)
    per_space = []
    for s in range(spaces):
        q, k, memory = _unit(queries[s]), _unit(keys[s]), _unit(queues[s])
        if s == 0:
            positives, own_negatives = ([0] if z0_positives == "k0" else list(range(spaces))), []
        else:
            positives, own_negatives = [s], [j for j in range(spaces) if j != s]
        losses = []
        for b in range(len(q)):
            for p in positives:
                logits = np.array([q[b] @ k[b, p]] + [q[b] @ k[b, j] for j in own_negatives] + list(memory @ q[b]))
                logits = logits / temperature
                losses.append(np.log(np.exp(logits).sum()) - logits[0])
        per_space.append(np.mean(losses))
    return np.mean(per_space) if reduction == "mean" else np.sum(per_space)


@pytest.mark.parametrize(
    "settings",
    [{}, {"reduction": "sum"}, {"z0_positives": "all"}, {"representation": "looc++", "temperature": 0.07}],
)
def test_looc_loss_for_two_augmentations_matches_numpy(settings):
    method = _method(**settings)
    method(_views(seed=0))  # fills the queues with a first batch of keys
    queues = [queue.negatives().numpy() for queue in method.queues]
    views = _views(seed=1)
    loss = method(views)["loss"].item()
    with torch.no_grad():
        queries = [head(v) for head, v in zip(method.heads, method.trunk.space_features(views[0].images))]
        per_key = [
            [head(v) for head, v in zip(method.target_heads, method.target_trunk.space_features(view.images))]
            for view in views[1:]
        ]
    keys = [torch.stack([embeddings[s] for embeddings in per_key], dim=1).numpy() for s in range(3)]
    expected = numpy_looc_loss([q.numpy() for q in queries], keys, queues, method.config.temperature,
                               method.config.z0_positives, method.config.reduction)
    assert loss == pytest.approx(expected, rel=1e-5)
    for s in range(3):  # queue s received key s's embedding in space s, normalised, after the first 6 keys
        assert np.allclose(method.queues[s].keys[6:12].numpy(), _unit(keys[s][:, s]), atol=1e-6)


def test_only_the_query_branch_gets_gradients():
    method = _method(representation="looc++")
    method(_views())["loss"].backward()
    assert all(p.grad is not None for p in method.heads.parameters())
    assert all(p.grad is not None for p in method.trunk.stage_copies.parameters())
    assert all(p.grad is None for p in [*method.target_trunk.parameters(), *method.target_heads.parameters()])


def test_a_wrong_number_of_views_names_the_views_to_set():
    with pytest.raises(ValueError, match=r"augment\.views=leave_one_out with the same augment\.augmentations"):
        _method(augmentations=("color", "rotation", "texture"))(_views(("color", "rotation")))


@pytest.mark.parametrize("augmentations", [("color",), ("color", "rotation"), ("color", "rotation", "texture")])
def test_looc_plus_plus_representation_is_the_sum_of_the_spaces(augmentations):
    width = build_backbone(BackboneConfig(width=0.125)).out_dim
    looc_pp = _method(augmentations, representation="looc++")
    assert looc_pp.encoder()(torch.rand(2, 3, 16, 16)).shape == (2, (len(augmentations) + 1) * width)
    assert _method(augmentations).encoder()(torch.rand(2, 3, 16, 16)).shape == (2, width)
    copies = looc_pp.trunk.stage_copies
    assert not torch.equal(copies[0][0].conv1.weight, looc_pp.backbone.layer4[0].conv1.weight)


def test_a_saved_looc_plus_plus_encoder_reloads_with_the_same_features(tmp_path):
    model = BackboneConfig(width=0.125)
    method = LooCMethod(build_backbone(model), LooCConfig(representation="looc++"), ["color", "texture"])
    encoder = method.encoder().eval()
    path = save_encoder(encoder, model, tmp_path / "encoder.safetensors")
    loaded, config = load_encoder(path)
    images = torch.rand(3, 3, 16, 16)
    assert config == model
    assert torch.allclose(loaded(images), encoder(images), atol=1e-6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment.augmentations=[]", r"augment: augmentations=\[\]"),
        ("augment.augmentations=[color,shear]", r"augment: augmentations=\['color', 'shear'\]: \['shear'\] unknown"),
        ("method.augmentations=[color]", r"method.augmentations: moved to augment.augmentations"),
        ("method.representation=looc+", r"method: representation='looc\+'"),
    ],
)
def test_bad_looc_configs_stop_at_config_load_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(shipped_config("methods/looc.yaml"), [override])


def test_looc_without_leave_one_out_views_stops_at_config_load():
    with pytest.raises(ConfigError, match=r"method.name=looc trains on augment.views=leave_one_out, not two_view"):
        load_config(shipped_config("methods/looc.yaml"), ["augment.recipe=moco_v2_32"])


@pytest.mark.parametrize("preset", ["looc", "looc++", "moco_v2_looc_aug"])
def test_the_augmentation_list_is_set_once_and_looc_reads_its_spaces_from_it(preset):
    config, _ = load_config(shipped_config(f"methods/{preset}.yaml"),
                            ["augment.augmentations=[rotation,color]", "method.queue_size=16"])
    assert config.augment.augmentations == ["rotation", "color"]
    views = build_views(config.augment, 16)(torch.rand(8, 3, 16, 16), torch.Generator().manual_seed(0))
    if preset == "moco_v2_looc_aug":
        assert len(views) == 2 and {"rotate90", "color_jitter"} <= set(views[0].params)
        return
    method = build_method(config.method, build_backbone(BackboneConfig(width=0.125)), config.augment)
    assert isinstance(method, LooCMethod) and len(method.heads) == len(method.queues) == 3
    assert len(views) == 4 and torch.isfinite(method(views)["loss"])


def _flat(config) -> dict:
    def walk(value, prefix):
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in walk(item, f"{prefix}{key}.").items()}
        return {prefix[:-1]: value}

    return walk(asdict(config), "")


@pytest.mark.parametrize(
    ("preset", "reference", "expected"),
    [
        ("looc++", "looc", {"method.representation"}),
        # LooC's baseline trains on LooC's multistep schedule, as the paper's MoCo baseline does.
        ("moco_v2_looc_aug", "moco_v2", {"augment.recipe", "augment.augmentations", "optim.schedule",
                                         "optim.milestones"}),
    ],
)
def test_each_preset_is_its_reference_with_one_switch(preset, reference, expected):
    ours, theirs = (_flat(load_config(shipped_config(f"methods/{p}.yaml"))[0]) for p in (preset, reference))
    assert {key for key in ours if ours[key] != theirs[key]} == expected


@pytest.mark.parametrize("preset", ["looc", "looc++", "moco_v2_looc_aug"])
def test_looc_presets_train_on_the_papers_multistep_schedule(preset):
    optim = load_config(shipped_config(f"methods/{preset}.yaml"))[0].optim
    # SGD lr 0.03, ×0.1 at epochs 300 and 400 of 500.
    assert (optim.name, optim.lr, optim.schedule) == ("sgd", 0.03, "multistep")
    assert optim.milestones == [300 / 500, 400 / 500]


@pytest.mark.parametrize("preset", ["looc", "looc++", "moco_v2_looc_aug"])
def test_two_pretraining_steps_per_preset(preset, tmp_path):
    config, _ = load_config(
        shipped_config(f"methods/{preset}.yaml"),
        [*TINY_OVERRIDES, "data.image_size=16", f"output_dir={tmp_path}", f"name={preset}", "method.queue_size=32"],
    )
    run = pretrain(config)
    assert read_status(run.directory)["steps"] == 2
    images = torch.rand(2, 3, 16, 16)
    for source in (run.directory, run.directory / "checkpoints" / "last.ckpt"):
        loaded, _ = load_encoder(source)
        assert torch.allclose(loaded(images), run.encoder(images), atol=1e-6), source
    if preset == "looc++":
        spaces = len(config.augment.augmentations) + 1
        assert run.encoder(images).shape[1] == spaces * run.encoder.backbone.out_dim
