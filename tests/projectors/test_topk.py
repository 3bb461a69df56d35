import pytest
import torch
import torch.nn.functional as F

from ibzoo.projectors import TopKLatents, TopKSparseProjector
from ibzoo.projectors.topk import linear_relu_topk


def dense_topk_reference(projector: TopKSparseProjector, x: torch.Tensor) -> torch.Tensor:
    """The paper's dense formulation: a B x latents mask and a dense decoder product, same parameters."""
    latents = torch.relu(F.linear(x - projector.pre_bias, projector.encoder.weight, projector.encoder.bias))
    keep = latents.topk(projector.k, dim=1).indices
    mask = torch.zeros_like(latents).scatter(1, keep, 1.0)
    return (latents * mask) @ projector.decoder_weight + projector.decoder_bias + projector.pre_bias


def make_projector(in_features=12, latents=200, k=10, dtype=torch.float64, seed=0) -> TopKSparseProjector:
    torch.manual_seed(seed)
    projector = TopKSparseProjector(in_features, latents, k).to(dtype)
    with torch.no_grad():  # non-zero biases so every term of the formula is exercised
        for bias in (projector.pre_bias, projector.encoder.bias, projector.decoder_bias):
            bias.normal_(0, 0.1)
    return projector


def outputs_and_grads(forward, projector, x, grad_out):
    x = x.clone().requires_grad_(True)
    out = forward(x)
    inputs = [x, *projector.parameters()]
    return [out, *torch.autograd.grad(out, inputs, grad_out)]


def assert_matches_dense(projector, x, **tolerances):
    grad_out = torch.randn(x.shape[0], projector.out_features, dtype=x.dtype)
    ours = outputs_and_grads(projector, projector, x, grad_out)
    dense = outputs_and_grads(lambda x: dense_topk_reference(projector, x), projector, x, grad_out)
    names = ["output", "x", *(name for name, _ in projector.named_parameters())]
    for name, got, expected in zip(names, ours, dense, strict=True):
        torch.testing.assert_close(got, expected, msg=lambda m, name=name: f"{name}: {m}", **tolerances)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_dense_formulation_values_and_grads(dtype):
    projector = make_projector(dtype=dtype)
    assert_matches_dense(projector, torch.randn(16, 12, dtype=dtype))


def test_matches_dense_with_ties_and_negative_pre_activations():
    projector = make_projector(latents=40, k=6)
    with torch.no_grad():
        projector.encoder.bias.fill_(-1.5)  # most pre-activations negative: many rows have < k positive
        projector.encoder.weight[1] = projector.encoder.weight[0]  # tied pair, always selected together
        projector.encoder.bias[:2] = 10.0
        projector.encoder.weight[3] = projector.encoder.weight[2]  # tied pair, never selected
        projector.encoder.bias[2:4] = -100.0
    x = 3 * torch.randn(32, 12, dtype=torch.float64)
    positives = (F.linear(x - projector.pre_bias, projector.encoder.weight, projector.encoder.bias) > 0).sum(
        1
    )
    assert (positives < projector.k).any() and (positives > projector.k).any()
    assert_matches_dense(projector, x)


@pytest.mark.parametrize("chunk_elements", [1, 150, 1 << 23])
def test_chunked_encoder_matches_dense_top_k(chunk_elements):
    torch.manual_seed(0)
    x = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(30, dtype=torch.float64, requires_grad=True)
    values, indices = linear_relu_topk(x, weight, bias, k=4, chunk_elements=chunk_elements)
    dense = torch.relu(F.linear(x, weight, bias))
    expected = dense.topk(4, dim=1)
    torch.testing.assert_close(values.sort(1).values, expected.values.sort(1).values)
    torch.testing.assert_close(indices.sort(1).values, expected.indices.sort(1).values)
    grad_values = torch.randn_like(values)
    grads = torch.autograd.grad(values, (x, weight, bias), grad_values)
    gathered = dense.gather(1, indices)
    expected_grads = torch.autograd.grad(gathered, (x, weight, bias), grad_values)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_encoder_function_passes_gradcheck():
    torch.manual_seed(1)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: linear_relu_topk(x, w, b, k=3, chunk_elements=20).values, (x, weight, bias)
    )


def test_at_most_k_active_latents_per_row():
    projector = make_projector(latents=64, k=5, dtype=torch.float32)
    latents = projector.encode(torch.randn(32, 12))
    assert isinstance(latents, TopKLatents)
    assert latents.values.shape == latents.indices.shape == (32, 5)
    assert (latents.values >= 0).all()
    dense = torch.zeros(32, 64).scatter(1, latents.indices, latents.values)
    assert ((dense != 0).sum(1) <= 5).all()
    assert all(row.unique().numel() == 5 for row in latents.indices)


def well_separated_projector(dtype=torch.float32) -> TopKSparseProjector:
    """Biases 1 apart dominate small weights, so bf16 rounding cannot change which latents win."""
    projector = make_projector(in_features=8, latents=64, k=4, dtype=dtype)
    with torch.no_grad():
        projector.encoder.weight.mul_(0.01)
        projector.encoder.bias.copy_(torch.arange(64.0).flip(0) - 32)
    return projector


def test_bfloat16_autocast_on_cpu_is_close_to_float32():
    projector = well_separated_projector()
    x = torch.randn(16, 8)
    grad_out = torch.randn(16, 8)
    reference = outputs_and_grads(projector, projector, x, grad_out)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = outputs_and_grads(projector, projector, x, grad_out)
    assert low[0].dtype == torch.bfloat16
    assert all(grad.dtype == torch.float32 for grad in low[1:])
    for got, want in zip(low, reference, strict=True):
        torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2 * want.abs().max().item())


def test_bfloat16_parameters_are_close_to_float32():
    projector = well_separated_projector()
    x = torch.randn(16, 8)
    reference = projector(x)
    out = projector.to(torch.bfloat16)(x.bfloat16())
    out.sum().backward()
    assert out.dtype == projector.decoder_weight.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=2e-2, atol=5e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_matches_dense_on_cuda():
    projector = make_projector(latents=500, k=20, dtype=torch.float32).cuda()
    x = torch.randn(64, 12, device="cuda")
    grad_out = torch.randn(64, 12, device="cuda")
    ours = outputs_and_grads(projector, projector, x, grad_out)
    dense = outputs_and_grads(lambda x: dense_topk_reference(projector, x), projector, x, grad_out)
    for got, want in zip(ours, dense, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_tied_unit_norm_initialisation():
    projector = TopKSparseProjector(16, 32, 4, init="tied")
    torch.testing.assert_close(projector.decoder_weight.norm(dim=1), torch.ones(32))
    torch.testing.assert_close(projector.decoder_weight, F.normalize(projector.encoder.weight, dim=1))
    assert not projector.pre_bias.any() and not projector.encoder.bias.any()
    assert not projector.decoder_bias.any() and projector.out_features == 16


def test_default_initialisation_is_the_references_two_independent_linears():
    """PKU-ML/Projector_Theory methods/simclr.py: nn.Linear(D, M) and nn.Linear(M, D), default init."""
    torch.manual_seed(0)
    projector = TopKSparseProjector(64, 4096, 128)
    assert projector.init == "independent" and not projector.pre_bias.any()
    for weight, fan_in in ((projector.encoder.weight, 64), (projector.decoder_weight, 4096)):
        bound = fan_in**-0.5  # nn.Linear's kaiming_uniform(a=sqrt(5)) bound
        assert weight.abs().max() <= bound and weight.abs().max() > 0.99 * bound
        assert weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)  # uniform, not tied
    assert projector.decoder_bias.abs().max() <= 4096**-0.5 and projector.decoder_bias.any()
    # The bottleneck starts closed: the output is a random sparse projection of x, not x.
    x = torch.randn(256, 64)
    with torch.no_grad():
        independent = F.cosine_similarity(projector(x), x).mean()
        tied = TopKSparseProjector(64, 4096, 128, init="tied")
        tied_cos = F.cosine_similarity(tied(x), x).mean()
    assert abs(independent.item()) < 0.1 and tied_cos.item() > 0.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((16, 8, 9), r"k=9 exceeds latents=8; lower k or raise latents"),
        ((16, 8, 0), r"k=0 must be a positive int"),
        ((0, 8, 2), r"in_features=0 must be a positive int"),
        ((16, -3, 2), r"latents=-3 must be a positive int"),
        ((16, 8, 2, "gao"), r"init='gao'; choose one of independent, tied"),
    ],
)
def test_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        TopKSparseProjector(*args)


def test_rejects_wrong_input_shape():
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 16\), got \(2, 3, 16\)"):
        TopKSparseProjector(16, 8, 2)(torch.randn(2, 3, 16))
