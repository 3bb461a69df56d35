import copy
import itertools
import math

import pytest
import torch
from torch import nn

from ibzoo.optim import LARS, OptimizerConfig, build_optimizer, parameter_groups, warmup_cosine_schedule

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


def _tiny_linear(weight: list[float], bias: float, device: str = "cpu") -> nn.Linear:
    layer = nn.Linear(len(weight), 1).to(device)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight]))
        layer.bias.fill_(bias)
    return layer


def _set_grads(layer: nn.Linear, weight_grad: list[float], bias_grad: float) -> None:
    layer.weight.grad = torch.tensor([weight_grad], device=layer.weight.device)
    layer.bias.grad = torch.full_like(layer.bias, bias_grad)


def _reference_lars(w, g, lr, wd, eta, clip):
    """One momentum-free LARS step, written straight from the formula (You et al. 2017, solo-learn)."""
    local_lr = eta * w.norm() / (g.norm() + wd * w.norm())
    step_size = min(local_lr, lr) if clip else lr * local_lr
    return w - step_size * (g + wd * w)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("clip_lr", "lr"), [(False, 0.5), (True, 0.5), (True, 0.01)])
def test_lars_step_matches_hand_computation(device, clip_lr, lr):
    # ||w|| = 5, ||g|| = 1, wd = 0.1: trust = 0.02 * 5 / (1 + 0.5) = 1/15.
    layer = _tiny_linear([3.0, 4.0], 0.5, device)
    optimizer = LARS(
        parameter_groups(layer, weight_decay=0.1), lr=lr, momentum=0.9, eta=0.02, clip_lr=clip_lr
    )
    _set_grads(layer, [0.6, 0.8], 2.0)
    optimizer.step()
    step_size = {(False, 0.5): 0.5 / 15, (True, 0.5): 1 / 15, (True, 0.01): 0.01}[(clip_lr, lr)]
    expected_weight = torch.tensor([[3.0, 4.0]]) - step_size * torch.tensor([[0.9, 1.2]])
    torch.testing.assert_close(layer.weight.detach().cpu(), expected_weight)
    # The bias is excluded: a plain SGD step, no decay, no trust ratio.
    torch.testing.assert_close(layer.bias.detach().cpu(), torch.tensor([0.5 - lr * 2.0]))


def test_lars_momentum_matches_reference_over_steps():
    torch.manual_seed(0)
    weight, momentum, lr, wd = torch.randn(3, 4), 0.9, 0.3, 1e-2
    param = nn.Parameter(weight.clone())
    optimizer = LARS([param], lr=lr, momentum=momentum, weight_decay=wd, eta=0.02, clip_lr=False)
    buffer = None
    for _ in range(3):
        grad = torch.randn(3, 4)
        param.grad = grad.clone()
        optimizer.step()
        trust = 0.02 * weight.norm() / (grad.norm() + wd * weight.norm())
        update = trust * (grad + wd * weight)
        buffer = update if buffer is None else momentum * buffer + update
        weight = weight - lr * buffer
        torch.testing.assert_close(param.detach(), weight)


@pytest.mark.parametrize("clip_lr", [False, True])
def test_lars_zero_norm_guards(clip_lr):
    zero_weight = nn.Parameter(torch.zeros(2, 2))
    zero_grad = nn.Parameter(torch.ones(2, 2))
    both_zero = nn.Parameter(torch.zeros(2, 2))
    zero_weight.grad = torch.full((2, 2), 0.5)
    zero_grad.grad = torch.zeros(2, 2)
    both_zero.grad = torch.zeros(2, 2)
    groups = [{"params": [zero_weight, both_zero]}, {"params": [zero_grad], "weight_decay": 0.0}]
    optimizer = LARS(groups, lr=0.1, momentum=0.9, weight_decay=0.1, clip_lr=clip_lr)
    optimizer.step()
    # Zero weight: trust falls back to 1, so it leaves zero with a plain SGD step.
    torch.testing.assert_close(zero_weight.detach(), torch.full((2, 2), -0.05))
    torch.testing.assert_close(zero_grad.detach(), torch.ones(2, 2))
    torch.testing.assert_close(both_zero.detach(), torch.zeros(2, 2))


def test_lars_zero_grad_still_decays_by_eta():
    param = nn.Parameter(torch.full((2, 2), 2.0))
    param.grad = torch.zeros(2, 2)
    LARS([param], lr=0.5, momentum=0.0, weight_decay=0.1, eta=0.02, clip_lr=False).step()
    # trust * wd * w = (eta / wd) * wd * w = eta * w, times lr.
    torch.testing.assert_close(param.detach(), torch.full((2, 2), 2.0 * (1 - 0.5 * 0.02)))


def test_lars_bfloat16_matches_float32():
    torch.manual_seed(0)
    weight, grad = torch.randn(8, 8), torch.randn(8, 8)
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        param = nn.Parameter(weight.to(dtype, copy=True))
        param.grad = grad.to(dtype)
        LARS([param], lr=0.3, weight_decay=1e-4, clip_lr=False).step()
        assert param.dtype == dtype
        results.append(param.detach().float())
    torch.testing.assert_close(results[1], results[0], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(results[0], _reference_lars(weight, grad, 0.3, 1e-4, 0.02, clip=False))


def test_parameter_groups_split():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    frozen = nn.Linear(2, 2)
    frozen.requires_grad_(False)
    model.append(frozen)
    decayed, excluded = parameter_groups(model, weight_decay=0.5)
    assert [id(p) for p in decayed["params"]] == [id(model[0].weight), id(model[3].weight)]
    assert [id(p) for p in excluded["params"]] == [id(model[1].weight), id(model[1].bias), id(model[3].bias)]
    assert (decayed["weight_decay"], decayed["lars_exclude"]) == (0.5, False)
    assert (excluded["weight_decay"], excluded["lars_exclude"]) == (0.0, True)
    # Empty groups are dropped: a norm-only module gives just the excluded group.
    (only_group,) = parameter_groups(nn.BatchNorm1d(3), weight_decay=0.5)
    assert only_group["lars_exclude"] and len(only_group["params"]) == 2


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
@pytest.mark.parametrize(("lr_scaling", "expected_lr"), [("linear", 0.6), ("none", 0.3)])
def test_build_optimizer_scales_lr_and_excludes_norms_from_decay(name, lr_scaling, expected_lr):
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    config = OptimizerConfig(name=name, lr=0.3, weight_decay=1e-3, lr_scaling=lr_scaling)
    optimizer = build_optimizer(model, config, total_batch_size=512)
    assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(expected_lr)] * 2
    assert [group["weight_decay"] for group in optimizer.param_groups] == [1e-3, 0.0]
    assert sum(len(group["params"]) for group in optimizer.param_groups) == 4


def _schedule_lrs(warmup_steps, total_steps, min_lr_ratio, base_lr=2.0):
    """The lr each optimisation step uses, plus the one left after the last step."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps, total_steps, min_lr_ratio)
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return [*lrs, optimizer.param_groups[0]["lr"]]


def test_warmup_cosine_values():
    lrs = _schedule_lrs(warmup_steps=4, total_steps=12, min_lr_ratio=0.1)
    expected = [2.0 * (s + 1) / 4 for s in range(4)]
    expected += [2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 8))) for s in range(4, 13)]
    assert lrs == pytest.approx(expected)
    assert (lrs[0], lrs[3], lrs[4], lrs[8], lrs[12]) == pytest.approx((0.5, 2.0, 2.0, 1.1, 0.2))


def test_warmup_cosine_without_warmup_starts_at_base_and_ends_at_min():
    lrs = _schedule_lrs(warmup_steps=0, total_steps=5, min_lr_ratio=0.0)
    assert (lrs[0], lrs[-1]) == pytest.approx((2.0, 0.0))
    assert all(a > b for a, b in itertools.pairwise(lrs))


def _train_steps(model, optimizer, scheduler, steps):
    lrs = []
    for step in range(steps):
        inputs = torch.linspace(-1, 1, 8).reshape(4, 2) * (step + 1)
        loss = model(inputs).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    return lrs


def test_resume_from_state_dicts_reproduces_lrs_and_weights():
    def build():
        torch.manual_seed(0)
        model = nn.Linear(2, 3)
        optimizer = build_optimizer(model, OptimizerConfig(lr=0.5), total_batch_size=256)
        return model, optimizer, warmup_cosine_schedule(optimizer, 3, 10, 0.05)

    model, optimizer, scheduler = build()
    _train_steps(model, optimizer, scheduler, 4)
    # Deep copies: state dicts alias the live tensors, which the straight run keeps updating.
    saved = copy.deepcopy((model.state_dict(), optimizer.state_dict(), scheduler.state_dict()))
    lrs_straight = _train_steps(model, optimizer, scheduler, 6)

    resumed_model, resumed_optimizer, resumed_scheduler = build()
    resumed_model.load_state_dict(saved[0])
    resumed_optimizer.load_state_dict(saved[1])
    resumed_scheduler.load_state_dict(saved[2])
    lrs_resumed = _train_steps(resumed_model, resumed_optimizer, resumed_scheduler, 6)
    assert lrs_resumed == lrs_straight
    torch.testing.assert_close(resumed_model.state_dict(), model.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "adam"}, "lars, sgd, adamw"),
        ({"lr_scaling": "sqrt"}, "linear, none"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"lars_eta": 0.0}, "lars_eta must be > 0"),
        ({"warmup_epochs": -1.0}, "warmup_epochs must be >= 0"),
        ({"min_lr_ratio": 1.5}, r"min_lr_ratio must be in \[0, 1\]"),
    ],
)
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OptimizerConfig(**kwargs)


def test_bad_arguments_raise():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="shorten the warmup"):
        warmup_cosine_schedule(optimizer, warmup_steps=20, total_steps=10)
    with pytest.raises(ValueError, match="total_batch_size must be >= 1"):
        build_optimizer(nn.Linear(2, 2), OptimizerConfig(), total_batch_size=0)
    with pytest.raises(ValueError, match="no parameters with requires_grad=True"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), OptimizerConfig(), total_batch_size=256)
    with pytest.raises(ValueError, match="eta"):
        LARS([nn.Parameter(torch.zeros(1))], lr=0.1, eta=0.0)


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_optimizer_fits_tiny_regression(name):
    torch.manual_seed(0)
    inputs = torch.randn(64, 4)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.7
    model = nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 1))
    lr = {"lars": 0.5, "sgd": 0.05, "adamw": 0.03}[name]
    config = OptimizerConfig(name=name, lr=lr, weight_decay=1e-4, lr_scaling="none")
    optimizer = build_optimizer(model, config, total_batch_size=64)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=5, total_steps=100)
    losses = []
    for _ in range(100):
        loss = nn.functional.mse_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1])
    assert losses[-1] < 0.1 * losses[0]
