"""BYOL, MoCo v3 and VICReg losses against solo-learn's formulations, and the momentum target."""

import math

import pytest
import torch
import torch.nn.functional as F

import ibzoo
from ibzoo.frameworks import BYOLLoss, MoCoV3Loss, VICRegLoss
from ibzoo.models.pretraining import momentum_at


def _views(batch=8, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=generator, requires_grad=True) for _ in range(2)]


def test_byol_loss_is_solo_learns_sum_over_both_view_orders():
    p, z = _views(seed=0), _views(seed=1)

    def byol_loss_func(p, z):  # solo/losses/byol.py, simplified=True
        return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()

    expected = byol_loss_func(p[1], z[0]) + byol_loss_func(p[0], z[1])
    torch.testing.assert_close(BYOLLoss()(p, z), expected)
    BYOLLoss()(p, z).backward()
    assert all(t.grad is None for t in z) and all(t.grad is not None for t in p)


def test_mocov3_loss_is_solo_learns_scaled_cross_entropy():
    q, k = _views(seed=0), _views(seed=1)

    def mocov3_loss_func(query, key, temperature=0.2):  # solo/losses/mocov3.py, one process
        query, key = F.normalize(query, dim=1), F.normalize(key, dim=1)
        logits = query @ key.T / temperature
        return F.cross_entropy(logits, torch.arange(query.shape[0])) * (2 * temperature)

    expected = mocov3_loss_func(q[0], k[1].detach()) + mocov3_loss_func(q[1], k[0].detach())
    torch.testing.assert_close(MoCoV3Loss(0.2)(q, k), expected)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        MoCoV3Loss(0.0)


def test_vicreg_loss_is_solo_learns_with_summed_variance_terms():
    z1, z2 = _views(batch=32, dim=12)

    def vicreg_loss_func(z1, z2):  # solo/losses/vicreg.py, one process
        sim = F.mse_loss(z1, z2)
        std1, std2 = torch.sqrt(z1.var(dim=0) + 1e-4), torch.sqrt(z2.var(dim=0) + 1e-4)
        var = F.relu(1 - std1).mean() + F.relu(1 - std2).mean()
        n, d = z1.shape
        c1, c2 = z1 - z1.mean(0), z2 - z2.mean(0)
        off = ~torch.eye(d, dtype=torch.bool)
        cov = ((c1.T @ c1) / (n - 1))[off].pow(2).sum() / d + ((c2.T @ c2) / (n - 1))[off].pow(2).sum() / d
        return 25 * sim + 25 * var + 1 * cov

    torch.testing.assert_close(VICRegLoss()([z1, z2]), vicreg_loss_func(z1, z2))
    # Widely spread, decorrelated views switch the variance hinge off.
    wide = torch.randn(4096, 4) * 3
    assert VICRegLoss(0, 1, 0)([wide, wide]).item() == 0.0


def test_momentum_schedule_is_solo_learns_cosine():
    assert momentum_at(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert momentum_at(100, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert momentum_at(50, 100, 0.99, 1.0) == pytest.approx(1.0 - 0.01 * (math.cos(math.pi / 2) + 1) / 2)


@pytest.mark.parametrize("framework", ["byol", "mocov3"])
def test_target_is_a_frozen_copy_moved_by_ema(framework):
    torch.manual_seed(0)
    model = ibzoo.create_pretraining_model("resnet18", framework=framework, projector="mlp")
    online = dict(model.backbone.named_parameters()) | {
        f"p.{n}": p for n, p in model.projector.named_parameters()
    }
    target = dict(model.target_backbone.named_parameters()) | {
        f"p.{n}": p for n, p in model.target_projector.named_parameters()
    }
    assert online.keys() == target.keys()
    assert all(torch.equal(online[n], target[n]) and not target[n].requires_grad for n in online)
    before = {n: t.detach().clone() for n, t in target.items()}
    with torch.no_grad():
        for p in online.values():
            p.add_(1.0)
    model.update_target(step=1, total_steps=10)  # tau = momentum_at(0) = 0.99
    for name, t in target.items():
        torch.testing.assert_close(t, 0.99 * before[name] + 0.01 * online[name])


def test_byol_quantizes_only_the_online_output_unless_asked():
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    for quantize_target in (False, True):
        torch.manual_seed(0)
        config = ibzoo.model_info("resnet18_byol_fsq").objective_config
        config = type(config)(**{**vars(config), "quantize_target": quantize_target})
        model = ibzoo.create_pretraining_model("resnet18_byol_fsq", objective_config=config)
        target = model._target_output(views[0])
        levels = model.projector.quantizer.levels
        on_grid = torch.allclose(target * (levels // 2), torch.round(target * (levels // 2)), atol=1e-5)
        assert on_grid == quantize_target
