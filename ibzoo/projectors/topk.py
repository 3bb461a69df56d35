"""Sparse top-k autoencoder projector, with memory that grows with k rather than with the latent count.

Structural regularization B of "Projection Head is Secretly an Information Bottleneck" (Ouyang et al.,
ICLR 2025, https://arxiv.org/abs/2503.00507): z = ReLU(W_enc (x - b_pre) + b_enc), keep the k largest
entries of z per row, out = W_dec z_topk + b_dec + b_pre, trained by the SSL loss alone. The top-k
autoencoder is that of "Scaling and evaluating sparse autoencoders" (Gao et al., 2024,
https://arxiv.org/abs/2406.04093).

The paper's setting (latents = 100000, k = 1000) makes a dense formulation, which materialises several
B x latents tensors and a dense decoder product, the cost centre of the whole head. Here:

- the decoder is an embedding bag over the k chosen rows of W_dec (work and memory O(B k D));
- the encoder is one autograd Function for linear + ReLU + top-k that computes the pre-activations in row
  chunks and saves only x, the chosen indices and their values for backward, never B x latents; its
  backward is embedding bags too (over W_enc for the input gradient, over the rows of x for W_enc's).

Values and gradients equal the dense formulation's (checked in tests/projectors/test_topk.py). ReLU is
monotone, so relu(topk(pre)) == topk(relu(pre)); when a row has fewer than k positive pre-activations the
kept zeros contribute nothing and receive no gradient, as in the dense version.
"""

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ibzoo.projectors._common import is_int_at_least

# Largest pre-activation chunk (rows x latents) the encoder forward allocates, in elements: 32 MiB in
# float32. At the paper's size that is 83 rows of 100000 latents, whose matmul is still ~8 GFLOP, so
# chunking costs no speed, instead of 100 MB for a 256-row batch.
CHUNK_ELEMENTS = 1 << 23

TopKInit = Literal["independent", "tied"]
TOPK_INITS: tuple[TopKInit, ...] = ("independent", "tied")


class TopKLatents(NamedTuple):
    """The k active latents of each row (values are >= 0; zeros when fewer than k are positive)."""

    values: torch.Tensor
    """(B, k) activations of the kept latents."""
    indices: torch.Tensor
    """(B, k) int64 latent indices, in no particular order."""


def _rows_per_chunk(elements_per_row: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // elements_per_row)


class _LinearReluTopK(torch.autograd.Function):
    """values, indices = topk(relu(x @ weight.T + bias), k); saves x, weight, indices, values only."""

    @staticmethod
    def forward(ctx, x, weight, bias, k, chunk_elements):
        batch, latents = x.shape[0], weight.shape[0]
        values = x.new_empty(batch, k)
        indices = torch.empty(batch, k, dtype=torch.long, device=x.device)
        rows = _rows_per_chunk(latents, chunk_elements)
        for start in range(0, batch, rows):
            # One expression, so each chunk's pre-activations are freed before the next is allocated.
            out = (values[start : start + rows], indices[start : start + rows])
            torch.topk(F.linear(x[start : start + rows], weight, bias), k, dim=1, sorted=False, out=out)
        values.relu_()
        ctx.save_for_backward(x, weight, values, indices)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        x, weight, values, indices = ctx.saved_tensors
        grad_pre = grad_values.masked_fill(values <= 0, 0.0)  # ReLU's gradient at the kept entries
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(indices, weight, per_sample_weights=grad_pre, mode="sum")
        # A latent row can collect contributions from every sample, so low-precision inputs are summed
        # in float32 and cast back once.
        accumulate_dtype = torch.promote_types(weight.dtype, torch.float32)
        flat_indices, flat_grad = indices.reshape(-1), grad_pre.reshape(-1).to(accumulate_dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = _encoder_weight_grad(
                x.to(accumulate_dtype), flat_indices, flat_grad, weight.shape[0]
            )
            grad_weight = grad_weight.to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = torch.zeros(weight.shape[0], dtype=accumulate_dtype, device=weight.device)
            grad_bias = grad_bias.index_add_(0, flat_indices, flat_grad).to(weight.dtype)
        return grad_x, grad_weight, grad_bias, None, None


def _encoder_weight_grad(
    x: torch.Tensor, flat_indices: torch.Tensor, flat_grad: torch.Tensor, latents: int
) -> torch.Tensor:
    """(M, D) gradient of W_enc: row m sums grad_pre[b, j] * x[b] over the (b, j) with indices[b, j] == m.

    That is an embedding bag over the rows of x with one bag per latent, found by sorting the B * k
    entries by latent. Each gradient row is written once: no (B * k, D) product tensor, no atomics (so
    deterministic on CUDA), and on CPU several times faster than ``index_add_`` of the products.
    """
    k = flat_indices.numel() // x.shape[0]
    order = flat_indices.argsort(stable=True)
    bag_sizes = torch.bincount(flat_indices, minlength=latents)
    offsets = bag_sizes.cumsum(0) - bag_sizes
    return F.embedding_bag(order // k, x, offsets, per_sample_weights=flat_grad[order], mode="sum")


def linear_relu_topk(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    k: int,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> TopKLatents:
    """topk(relu(x @ weight.T + bias), k) per row without keeping B x M tensors for backward.

    Under autocast the inputs are cast to the autocast dtype first, as ``F.linear`` would be.

    Args:
        x: (B, D) inputs; B: batch, D: features.
        weight: (M, D) encoder weight; M: latents.
        bias: (M,) encoder bias.
        k: Latents kept per row, 1 <= k <= M.
        chunk_elements: Bound on the elements of a pre-activation chunk (see ``CHUNK_ELEMENTS``).

    Returns:
        ``TopKLatents`` with (B, k) values and indices.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type) and x.dtype != torch.float64:
        dtype = torch.get_autocast_dtype(device_type)
        x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
    values, indices = _LinearReluTopK.apply(x, weight, bias, k, chunk_elements)
    return TopKLatents(values, indices)


class TopKSparseProjector(nn.Module):
    """Sparse autoencoder that keeps the k largest latents per row; output width equals input width.

    Args:
        in_features: Width D of the input and of the output.
        latents: Number M of latents (the paper uses 100000).
        k: Latents kept per row (the paper uses 1000).
        init: ``"independent"`` (the reference's) or ``"tied"`` (Gao et al.'s); see
            :meth:`reset_parameters`.

    Attributes:
        out_features: Output width, equal to ``in_features``.
    """

    def __init__(self, in_features: int, latents: int, k: int, init: TopKInit = "independent") -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("latents", latents), ("k", k)):
            if not is_int_at_least(value):
                raise ValueError(f"TopKSparseProjector: {name}={value!r} must be a positive int.")
        if k > latents:
            raise ValueError(
                f"TopKSparseProjector: k={k} exceeds latents={latents}; lower k or raise latents."
            )
        if init not in TOPK_INITS:
            raise ValueError(f"TopKSparseProjector: init={init!r}; choose one of {', '.join(TOPK_INITS)}.")
        self.in_features = in_features
        self.latents = latents
        self.k = k
        self.init = init
        self.out_features: int = in_features
        # No reconstruction loss and no data at construction, so there is no geometric median to centre
        # on: the input offset starts at zero and is learnt.
        self.pre_bias = nn.Parameter(torch.zeros(in_features))
        self.encoder = nn.Linear(in_features, latents)
        self.decoder_weight = nn.Parameter(torch.empty(latents, in_features))
        self.decoder_bias = nn.Parameter(torch.zeros(in_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise the encoder and decoder as ``init`` says.

        ``"independent"`` (the reference's, and the zoo's but for Barlow Twins): encoder and decoder drawn
        independently with PyTorch's default ``nn.Linear`` init, as the reference builds them (two
        ``nn.Linear`` layers in PKU-ML/Projector_Theory's ``methods/simclr.py``): W_dec and b_dec uniform in
        +-1/sqrt(latents). The head starts as a random sparse projection, the bottleneck closed (at
        512 -> 100000 -> 512, k = 1000, cos(out, x) is about 0).

        ``"tied"``: Gao et al.'s sparse-autoencoder init, W_dec = W_enc^T with unit-norm latent directions
        and a zero encoder bias; the head starts as a near pass-through (cos(out, x) about 0.97 at the
        same size), the bottleneck open. Barlow Twins' zoo heads start so: ibzoo's deviation, measured
        (``ibzoo/frameworks/barlow_twins.py``).
        """
        self.encoder.reset_parameters()
        if self.init == "tied":
            self.encoder.bias.zero_()
            self.decoder_weight.copy_(F.normalize(self.encoder.weight, dim=1))
            self.decoder_bias.zero_()
            return
        # nn.Linear(latents, in_features)'s init: kaiming_uniform(a=sqrt(5)) is uniform in 1/sqrt(fan_in).
        bound = 1.0 / math.sqrt(self.latents)
        self.decoder_weight.uniform_(-bound, bound)
        self.decoder_bias.uniform_(-bound, bound)

    def encode(self, x: torch.Tensor) -> TopKLatents:
        """Select the k active latents of each row.

        Args:
            x: (B, D) inputs; B: batch, D: ``in_features``.

        Returns:
            ``TopKLatents`` with (B, k) values and indices.
        """
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"TopKSparseProjector: expected input of shape (batch, {self.in_features}), "
                f"got {tuple(x.shape)}; flatten leading dimensions first."
            )
        return linear_relu_topk(x - self.pre_bias, self.encoder.weight, self.encoder.bias, self.k)

    def decode(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Sum the chosen decoder rows weighted by their activations, then add the biases.

        Args:
            values: (B, k) latent activations.
            indices: (B, k) latent indices.

        Returns:
            (B, D) outputs, in the dtype of ``values``.
        """
        decoded = F.embedding_bag(
            indices, self.decoder_weight.to(values.dtype), per_sample_weights=values, mode="sum"
        )
        return decoded + (self.decoder_bias + self.pre_bias).to(values.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode to k active latents per row and decode.

        Args:
            x: (B, D) inputs; B: batch, D: ``in_features``.

        Returns:
            (B, D) outputs.
        """
        return self.decode(*self.encode(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, latents={self.latents}, k={self.k}, init={self.init}"
