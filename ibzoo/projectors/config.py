"""``ProjectorConfig``, the one description of a projection head, and ``build_projector``, which composes
the parts (MLP, sparse top-k autoencoder, finite scalar quantization) it names.

"Projection Head is Secretly an Information Bottleneck" (Ouyang et al., ICLR 2025,
https://arxiv.org/abs/2503.00507) makes the projector a bottleneck in two structural ways, both
expressible with ``ProjectorConfig``:

- SimCLR MLP head:          ``ProjectorConfig()``                       512 -> 2048 -> 256
- Barlow Twins MLP head:    ``ProjectorConfig((2048, 2048), 2048, batch_norm=True)``
- discretized (either):     the MLP config plus ``fsq_levels`` (about 30 for SimCLR, 3 for Barlow Twins)
- SimCLR sparse top-k:      ``ProjectorConfig((), None, topk_latents=100000, topk_k=1000)``  512 -> 512
- Barlow Twins sparse top-k: ``ProjectorConfig((2048,), None, batch_norm=True, topk_latents=..., topk_k=...)``

Validation: a ``ProjectorConfig`` checks itself when made (from Python, YAML, JSON or the command line), so a
bad setting is reported in the config's own words before anything is built; ``build_projector`` trusts it
and adds no checks of its own. The projector classes keep their argument checks because they are public
and built directly too: there ``in_features``, the one width a config does not hold, is checked.
"""

from dataclasses import dataclass

from torch import nn

from ibzoo.projectors._common import is_int_at_least
from ibzoo.projectors.fsq import DiscretizedProjector
from ibzoo.projectors.mlp import MLPProjector
from ibzoo.projectors.topk import TOPK_INITS, TopKInit, TopKSparseProjector

__all__ = ["ProjectorConfig", "ProjectorStack", "build_projector"]


@dataclass
class ProjectorConfig:
    """Which projection head to build; plain values only, so it round-trips through JSON and YAML.

    The parts apply in order: MLP part, then sparse top-k autoencoder, then quantization of the output.
    """

    hidden_features: tuple[int, ...] = (2048,)
    """Widths of the MLP part's Linear(-BatchNorm1d)-ReLU blocks."""
    out_features: int | None = 256
    """Width of the MLP part's final Linear; None ends the MLP part in ReLU (a stem)."""
    batch_norm: bool = False
    """BatchNorm1d between each hidden Linear and its ReLU."""
    bias: bool = True
    """Biases in the MLP part's Linears (MoCo v3's heads have none)."""
    out_batch_norm: bool = False
    """BatchNorm1d without affine parameters after the MLP part's final Linear (MoCo v3's projector)."""
    topk_latents: int | None = None
    """Latent count of a sparse top-k autoencoder after the MLP part; None for no autoencoder."""
    topk_k: int | None = None
    """Latents kept per row by that autoencoder; set together with ``topk_latents``."""
    topk_init: TopKInit = "independent"
    """The autoencoder's init: "independent" (the reference's nn.Linear defaults) or "tied" (Gao et al.)."""
    fsq_levels: int | None = None
    """Quantize the output to this many levels per dimension; None for no quantization."""
    fsq_standardize: bool = False
    """Standardize each output dimension over the batch before quantizing (see DiscretizedProjector)."""

    def __post_init__(self) -> None:
        # YAML and JSON give lists back; a tuple keeps the config hashable and equal to the original.
        self.hidden_features = tuple(self.hidden_features)
        for i, width in enumerate(self.hidden_features):
            if not is_int_at_least(width):
                raise ValueError(f"ProjectorConfig: hidden_features[{i}]={width!r} must be a positive int.")
        for name in ("out_features", "topk_latents", "topk_k"):
            value = getattr(self, name)
            if value is not None and not is_int_at_least(value):
                raise ValueError(f"ProjectorConfig: {name}={value!r} must be a positive int or None.")
        if self.batch_norm and not self.hidden_features:
            raise ValueError(
                "ProjectorConfig: batch_norm=True needs hidden_features (BatchNorm follows hidden Linears "
                "only); add a hidden width or set batch_norm=False."
            )
        if (self.topk_latents is None) != (self.topk_k is None):
            raise ValueError(
                f"ProjectorConfig: topk_latents={self.topk_latents} and topk_k={self.topk_k} must be set "
                "together (both None for no sparse autoencoder)."
            )
        if self.topk_k is not None and self.topk_k > self.topk_latents:
            raise ValueError(
                f"ProjectorConfig: topk_k={self.topk_k} exceeds topk_latents={self.topk_latents}; "
                "lower topk_k or raise topk_latents."
            )
        if self.topk_init not in TOPK_INITS:
            raise ValueError(
                f"ProjectorConfig: topk_init={self.topk_init!r}; choose one of {', '.join(TOPK_INITS)}."
            )
        if self.fsq_levels is not None and not is_int_at_least(self.fsq_levels, 2):
            raise ValueError(f"ProjectorConfig: fsq_levels={self.fsq_levels!r} must be an int >= 2 or None.")
        if self.out_batch_norm and self.out_features is None:
            raise ValueError("ProjectorConfig: out_batch_norm=True needs out_features (a final Linear).")
        if self.fsq_standardize and self.fsq_levels is None:
            raise ValueError(
                "ProjectorConfig: fsq_standardize=True standardizes before quantization; set fsq_levels too."
            )
        if not self.has_mlp and self.topk_latents is None:
            raise ValueError(
                "ProjectorConfig: hidden_features=() with out_features=None and no top-k autoencoder "
                "describes no projector; set out_features, hidden_features or topk_latents/topk_k."
            )

    @property
    def has_mlp(self) -> bool:
        """Whether the config has an MLP part (it is dropped when it would have no layers)."""
        return bool(self.hidden_features) or self.out_features is not None


class ProjectorStack(nn.Sequential):
    """Projector parts applied in order; ``out_features`` is the last part's output width."""

    @property
    def out_features(self) -> int:
        return self[-1].out_features


def build_projector(in_features: int, config: ProjectorConfig) -> nn.Module:
    """Build the projection head a config describes.

    Args:
        in_features: Width of the encoder features fed to the head.
        config: The head to build.

    Returns:
        A module mapping (B, in_features) to (B, out_features), with an ``out_features`` attribute;
        B: batch.
    """
    parts: list[nn.Module] = []
    width = in_features
    if config.has_mlp:
        parts.append(
            MLPProjector(
                width,
                config.hidden_features,
                config.out_features,
                config.batch_norm,
                config.bias,
                config.out_batch_norm,
            )
        )
        width = parts[-1].out_features
    if config.topk_latents is not None:
        parts.append(TopKSparseProjector(width, config.topk_latents, config.topk_k, config.topk_init))
    projector = parts[0] if len(parts) == 1 else ProjectorStack(*parts)
    if config.fsq_levels is not None:
        projector = DiscretizedProjector(projector, config.fsq_levels, config.fsq_standardize)
    return projector
