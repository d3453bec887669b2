import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augbench.augment.views import View
from augbench.config import shipped_config
from augbench.errors import ConfigError
from augbench.methods import build_method
from augbench.methods.shuffle_bn import SplitBatchNorm1d, SplitBatchNorm2d, shuffled, split_batchnorm
from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.train.config import load_config


def test_each_sub_batch_is_normalised_with_its_own_statistics_and_the_running_ones_average_them():
    torch.manual_seed(0)
    images = torch.randn(12, 5, 4, 4) * torch.arange(1, 13).view(12, 1, 1, 1)  # sub-batches of different spread
    split = SplitBatchNorm2d(5, splits=3)
    reference = [nn.BatchNorm2d(5) for _ in range(3)]
    out = split(images)
    expected = torch.cat([bn(part) for bn, part in zip(reference, images.chunk(3))])
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(split.running_mean, torch.stack([bn.running_mean for bn in reference]).mean(0))
    assert torch.allclose(split.running_var, torch.stack([bn.running_var for bn in reference]).mean(0))
    assert not torch.allclose(out, nn.BatchNorm2d(5)(images), atol=1e-3)  # one batch's statistics differ
    split.eval()
    plain = nn.BatchNorm2d(5).eval()
    plain.load_state_dict(split.state_dict())
    assert torch.equal(split(images), plain(images))  # and its state is a BatchNorm2d's


def test_channels_last_batches_split_alike():
    images = torch.randn(8, 6, 5, 5)
    split = SplitBatchNorm2d(6, splits=4)
    out = split(images.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, SplitBatchNorm2d(6, splits=4)(images), atol=1e-5)


def test_a_batch_that_does_not_split_evenly_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"method.shuffle_bn=4: a batch of 6 images does not split into 4"):
        SplitBatchNorm2d(3, splits=4)(torch.randn(6, 3, 2, 2))


def test_a_converted_backbone_keeps_its_weights_and_state_dict_keys():
    backbone = build_backbone(BackboneConfig(width=0.125))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    split_batchnorm(backbone, 4)
    assert any(isinstance(m, SplitBatchNorm2d) for m in backbone.modules())
    assert not any(type(m) is nn.BatchNorm2d for m in backbone.modules())
    after = backbone.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_shuffled_encodes_a_permuted_batch_and_returns_the_batchs_order():
    seen = []

    def encode(images):
        seen.append(images.clone())
        return images * 2

    images = torch.arange(16.0).view(16, 1)
    state = torch.get_rng_state()
    out = shuffled(encode, images, step=3)
    assert torch.equal(out, images * 2)
    assert not torch.equal(seen[0], images) and torch.equal(seen[0].sort(dim=0).values, images)
    shuffled(encode, images, step=3)
    shuffled(encode, images, step=4)
    assert torch.equal(seen[1], seen[0]) and not torch.equal(seen[2], seen[0])  # one permutation per step
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator is left alone


def test_moco_v2_embeds_its_keys_from_a_shuffled_batch_and_queues_them_in_the_batchs_order():
    config, _ = load_config(shipped_config("methods/moco_v2.yaml"), ["model.width=0.125", "method.queue_size=32",
                                                                     "method.queue_init=empty"])  # the queue: the keys
    assert config.method.shuffle_bn == 8
    method = build_method(config.method, build_backbone(config.model), config.augment)
    key_encoder_inputs = []
    method.target_backbone.register_forward_pre_hook(lambda module, args: key_encoder_inputs.append(args[0]))
    keys = torch.rand(16, 3, 16, 16)
    method([View(torch.rand(16, 3, 16, 16), {}), View(keys, {})])
    seen = key_encoder_inputs[0]
    order = [next(i for i in range(16) if torch.equal(keys[i], row)) for row in seen]
    assert sorted(order) == list(range(16)) and order != list(range(16))
    with torch.no_grad():  # train mode: the same sub-batches give the same statistics
        embedded = method.target_projector(method.target_backbone(seen))
    in_batch_order = torch.empty_like(embedded)
    in_batch_order[order] = embedded
    assert torch.allclose(method.queue.negatives(), F.normalize(in_batch_order, dim=1), atol=1e-5)
    with torch.no_grad():
        unshuffled = method.target_projector(method.target_backbone(keys))
    assert not torch.allclose(F.normalize(unshuffled, dim=1), method.queue.negatives(), atol=1e-3)


@pytest.mark.parametrize("step", ["01_projector_bn", "04_momentum_schedule"])
def test_shuffle_bn_splits_the_heads_batchnorm_too_so_sub_batches_share_no_statistics(step):
    config, _ = load_config(shipped_config(f"fair/{step}.yaml"), ["model.width=0.125", "method.queue_size=32"])
    method = build_method(config.method, build_backbone(config.model), config.augment)
    heads = [method.projector, method.target_projector, method.predictor]
    assert not any(type(m) is nn.BatchNorm1d for head in heads for m in head.modules())
    assert any(isinstance(m, SplitBatchNorm1d) for m in method.projector.modules())
    images = torch.rand(16, 3, 16, 16)
    others = images.clone()
    others[2:] = torch.rand(14, 3, 16, 16)  # every sub-batch of 2 but the first changes
    with torch.no_grad():  # train mode: batch statistics
        first, second = (method.predictor(method.projector(method.backbone(x))) for x in (images, others))
    # A query's projection depends on its own sub-batch only, in the heads as in the backbone (MoCo's per-GPU BN).
    assert torch.allclose(first[:2], second[:2], atol=1e-5) and not torch.allclose(first[2:], second[2:], atol=1e-3)


def test_shuffle_bn_needs_a_momentum_encoder_and_refuses_syncbn():
    path = shipped_config("methods/moco_v2.yaml")
    with pytest.raises(ConfigError, match=r"shuffle_bn=8 shuffles the momentum encoder's input"):
        load_config(path, ["method.momentum.enabled=false"])
    with pytest.raises(ConfigError, match=r"trainer.sync_batchnorm=true .* undoes method.shuffle_bn=8"):
        load_config(path, ["trainer.sync_batchnorm=true"])


@pytest.mark.parametrize("preset", ["looc", "looc++"])
def test_looc_normalises_in_sub_batches_everywhere_and_shuffles_each_key_view(preset):
    config, _ = load_config(shipped_config(f"methods/{preset}.yaml"), ["model.width=0.125", "method.queue_size=32"])
    method = build_method(config.method, build_backbone(config.model), config.augment)
    for module in (method.trunk, method.target_trunk):
        assert not any(type(m) is nn.BatchNorm2d for m in module.modules())
    inputs, space_features = [], method.target_trunk.space_features

    def recording(images):
        inputs.append(images)
        return space_features(images)

    method.target_trunk.space_features = recording
    views = [View(torch.rand(16, 3, 16, 16), {}) for _ in range(len(config.augment.augmentations) + 2)]
    method(views)
    assert len(inputs) == len(views) - 1
    for seen, key in zip(inputs, views[1:]):
        assert not torch.equal(seen, key.images) and torch.equal(seen.sum(dim=(1, 2, 3)).sort().values,
                                                                 key.images.sum(dim=(1, 2, 3)).sort().values)
    steps = int(method.shuffle_bn.steps)
    method.update_target(0.0)
    assert int(method.shuffle_bn.steps) == steps + 1  # a checkpointed counter: a new permutation each step
    assert method.shuffle_bn.host_int("steps") == steps + 1  # its host copy, which the permutation's seed reads
    assert "shuffle_bn.steps" in method.state_dict()


def test_hai_refuses_a_base_method_with_shuffle_bn():
    with pytest.raises(ConfigError, match=r"base_method.shuffle_bn=8: HAI runs its stages' pairs without Shuffle BN"):
        load_config(shipped_config("methods/hai_moco_v2.yaml"), ["method.base_method.shuffle_bn=8"])
