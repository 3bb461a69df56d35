import math

import pytest
import torch

from ibzoo.projectors import DiscretizedProjector, FiniteScalarQuantizer, MLPProjector


def paper_fsq(z: torch.Tensor, levels: int, eps: float = 1e-3) -> torch.Tensor:
    """The paper's quantizer written out directly (forward values only)."""
    half_width = (levels - 1) * (1 - eps) / 2
    offset = 0.5 if levels % 2 == 0 else 0.0
    shift = math.tan(offset / half_width)
    return torch.round(torch.tanh(z + shift) * half_width - offset) / (levels // 2)


@pytest.mark.parametrize("levels", [2, 3, 4, 5, 8, 30])
def test_sweep_hits_exactly_levels_values_in_unit_range(levels):
    z = torch.linspace(-10, 10, 200_001, dtype=torch.float64).unsqueeze(1)
    codes = FiniteScalarQuantizer(levels)(z)
    distinct = codes.unique()
    assert distinct.numel() == levels
    assert distinct.min() >= -1 and distinct.max() <= 1
    steps = distinct.diff()
    torch.testing.assert_close(steps, torch.full_like(steps, 1 / (levels // 2)))
    torch.testing.assert_close(codes, paper_fsq(z, levels))


@pytest.mark.parametrize("levels", [3, 4, 30])
def test_straight_through_gradient_is_that_of_the_bound(levels):
    quantizer = FiniteScalarQuantizer(levels)
    z = torch.randn(64, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(64, 8, dtype=torch.float64)
    (quantizer(z) * weights).sum().backward()
    shifted = z.detach() + quantizer.shift
    bound_derivative = quantizer.half_width * (1 - torch.tanh(shifted) ** 2)
    torch.testing.assert_close(z.grad, weights * bound_derivative / (levels // 2))


@pytest.mark.parametrize("levels", [3, 4, 30])
def test_indices_round_trip(levels):
    quantizer = FiniteScalarQuantizer(levels)
    codes = quantizer(torch.randn(256, 16) * 3)
    indices = quantizer.codes_to_indices(codes)
    assert indices.dtype == torch.long
    assert indices.min() >= 0 and indices.max() < levels
    torch.testing.assert_close(quantizer.indices_to_codes(indices), codes)
    every_index = torch.arange(levels)
    torch.testing.assert_close(
        quantizer.codes_to_indices(quantizer.indices_to_codes(every_index)), every_index
    )


@pytest.mark.parametrize("levels", [3, 30])
def test_bfloat16_input_keeps_dtype_and_float32_levels(levels):
    quantizer = FiniteScalarQuantizer(levels)
    z = torch.randn(512, 4) * 2
    reference = quantizer(z)
    z_low = z.bfloat16()
    codes = quantizer(z_low)
    assert codes.dtype == torch.bfloat16
    # Exactly the float32 computation's levels on the same (bf16-rounded) input, stored in bf16.
    torch.testing.assert_close(codes, quantizer(z_low.float()).bfloat16(), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(quantizer(z), reference, rtol=0, atol=0)


@pytest.mark.parametrize("levels", [1, 0, 2.5, True])
def test_rejects_fewer_than_two_levels(levels):
    with pytest.raises(ValueError, match=r"levels=.* must be an int >= 2"):
        FiniteScalarQuantizer(levels)


def test_discretized_projector_quantizes_the_projection():
    projector = MLPProjector(16, (32,), 8)
    discretized = DiscretizedProjector(projector, levels=5)
    assert discretized.out_features == 8
    x = torch.randn(10, 16, requires_grad=True)
    out = discretized(x)
    torch.testing.assert_close(out, paper_fsq(projector(x), 5))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_discretized_projector_needs_out_features():
    with pytest.raises(ValueError, match="no int `out_features`"):
        DiscretizedProjector(torch.nn.Identity(), levels=3)
