import pytest
import torch

from augbench.optim import OptimConfig, build_optimizer, build_scheduler, parameter_groups, warmup_cosine


def _model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))


def test_learning_rate_scales_with_the_global_batch():
    optimizer = build_optimizer(_model(), OptimConfig(name="sgd", lr=0.03), global_batch_size=512)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.06)


def test_bn_and_biases_are_excluded_from_weight_decay_when_asked():
    groups = parameter_groups(_model(), weight_decay=1e-4, exclude_bn_bias=True)
    assert [len(g["params"]) for g in groups] == [2, 4]
    assert groups[1]["weight_decay"] == 0.0
    assert len(parameter_groups(_model(), 1e-4, exclude_bn_bias=False)) == 1


def test_lars_skips_adaptation_for_excluded_parameters():
    model = _model()
    optimizer = build_optimizer(model, OptimConfig(name="lars", lr=0.1, weight_decay=1e-4, exclude_bn_bias=True), 256)
    model(torch.randn(16, 4)).sum().backward()
    bias_before = model[0].bias.detach().clone()
    grad = model[0].bias.grad.clone()
    optimizer.step()
    # without adaptation the bias moves by exactly lr × grad (first momentum step)
    assert torch.allclose(model[0].bias, bias_before - 0.1 * grad, atol=1e-7)


def test_warmup_then_cosine():
    assert warmup_cosine(0, warmup_steps=10, total_steps=110) == pytest.approx(0.1)
    assert warmup_cosine(9, warmup_steps=10, total_steps=110) == pytest.approx(1.0)
    assert warmup_cosine(60, warmup_steps=10, total_steps=110) == pytest.approx(0.5)
    assert warmup_cosine(110, warmup_steps=10, total_steps=110) == pytest.approx(0.0)
    assert warmup_cosine(110, 0, 110, min_ratio=0.1) == pytest.approx(0.1)


def test_a_warmup_as_long_as_the_run_warns_naming_the_key(recwarn):
    config = OptimConfig(name="sgd", warmup_epochs=10)
    build_scheduler(build_optimizer(_model(), config, 256), config, steps_per_epoch=4, total_steps=41)
    assert not recwarn
    with pytest.warns(UserWarning, match=r"optim.warmup_epochs=10 spans the whole run \(40 steps\)"):
        build_scheduler(build_optimizer(_model(), config, 256), config, steps_per_epoch=4, total_steps=40)


def test_a_fixed_predictor_lr_stays_at_the_base_rate_while_the_rest_warms_up_and_decays():
    config = OptimConfig(name="sgd", lr=0.05, warmup_epochs=1, fixed_predictor_lr=True, exclude_bn_bias=True)
    method = _model()
    predictor = method[2]
    method.predictor_parameters = lambda: list(predictor.parameters())
    optimizer = build_optimizer(method, config, 256)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=5, total_steps=20)
    fixed = [group for group in optimizer.param_groups if group.get("fixed_lr")]
    assert {id(p) for group in fixed for p in group["params"]} == {id(p) for p in predictor.parameters()}
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(method.parameters()))
    rates = []
    for _ in range(20):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for index, group in enumerate(optimizer.param_groups):
        schedule = [step[index] for step in rates]
        if group.get("fixed_lr"):
            assert schedule == pytest.approx([0.05] * 20)
        else:
            assert schedule[0] == pytest.approx(0.01) and schedule[-1] < 0.002


def test_a_fixed_predictor_lr_without_a_predictor_is_refused():
    with pytest.raises(ValueError, match="fixed_predictor_lr=true, but Sequential has no predictor"):
        build_optimizer(_model(), OptimConfig(fixed_predictor_lr=True), 256)


def test_lars_without_weight_decay_is_refused_as_it_would_adapt_nothing():
    with pytest.raises(ValueError, match="weight_decay=0 with name='lars'"):
        OptimConfig(name="lars", weight_decay=0.0)


def test_unknown_optimiser_is_named():
    with pytest.raises(ValueError, match="name='adam'"):
        OptimConfig(name="adam")


def test_a_multistep_schedule_drops_the_rate_tenfold_at_each_milestone_after_the_warm_up():
    config = OptimConfig(name="sgd", lr=0.03, warmup_epochs=1, schedule="multistep", milestones=[0.6, 0.8])
    optimizer = build_optimizer(_model(), config, 256)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10, total_steps=500)  # LooC: 50 of 500 "epochs"
    rates = []
    for _ in range(500):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.003) and rates[9] == pytest.approx(0.03)  # warm-up over the first epoch
    assert rates[10:300] == pytest.approx([0.03] * 290)  # constant, not cosine, until 60 % of the run
    assert rates[300:400] == pytest.approx([0.003] * 100) and rates[400:] == pytest.approx([0.0003] * 100)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"schedule": "multistep"}, r"milestones=\[\]: schedule='multistep' needs fractions of the run"),
    ({"schedule": "multistep", "milestones": [300, 400]}, r"milestones=\[300, 400\]: .* e.g. \[0.6, 0.8\]"),
    ({"milestones": [0.6]}, r"milestones=\[0.6\]: read only with schedule='multistep', not 'cosine'"),
    ({"schedule": "step"}, r"schedule='step': expected one of \('cosine', 'multistep'\)"),
    ({"name": "lars", "bn_bias_lr": 0.0048}, r"bn_bias_lr=0.0048: .* needs exclude_bn_bias=true"),
])
def test_schedule_and_rate_settings_that_cannot_work_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        OptimConfig(**overrides)


def test_bn_and_biases_take_their_own_scaled_rate_as_barlow_twins_lars():
    config = OptimConfig(name="lars", lr=0.2, weight_decay=1e-6, exclude_bn_bias=True, bn_bias_lr=0.0048)
    optimizer = build_optimizer(_model(), config, global_batch_size=2048)
    weights, bn_and_biases = optimizer.param_groups
    assert weights["lr"] == pytest.approx(1.6) and bn_and_biases["lr"] == pytest.approx(0.0384)
    assert [p.ndim for p in bn_and_biases["params"]] == [1, 1, 1, 1] and bn_and_biases["weight_decay"] == 0.0


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_the_fused_optimiser_takes_the_loops_steps(name):
    # Fused only on CUDA in training (PretrainModule.configure_optimizers); torch's fused kernels run on a CPU too,
    # so the update they make is checked against the per-tensor loop here, and on a GPU in tests/train/test_gpu.py.
    # No bias right before a BatchNorm: its gradient is rounding noise, which Adam's normalisation makes a full step.
    nn = torch.nn
    models = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 2)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    initial = models[0][0].weight.detach().clone()
    config = OptimConfig(name=name, lr=0.05, weight_decay=1e-4, exclude_bn_bias=True)
    optimizers = [build_optimizer(model, config, 256, fused=fused) for model, fused in zip(models, (False, True))]
    assert [o.defaults["fused"] for o in optimizers] == [None, True]  # not fused: checkpoints as before
    inputs = torch.randn(5, 16, 4)
    for batch in inputs:
        for model, optimizer in zip(models, optimizers):
            optimizer.zero_grad()
            model(batch).square().mean().backward()
            optimizer.step()
    for loop, fused in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(loop, fused, rtol=1e-5, atol=1e-6)
    assert not torch.equal(models[0][0].weight, initial)
