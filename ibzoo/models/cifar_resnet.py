"""ResNets with the CIFAR stem, registered with timm as ``resnet18_cifar`` and ``resnet50_cifar``.

At 32x32 the ImageNet stem (7x7 stride-2 conv, then a stride-2 max-pool) would leave an 8x8 map after
the stem; self-supervised CIFAR work (SimCLR's appendix, solo-learn) uses a 3x3 stride-1 first conv and no
max-pool instead. Everything else is timm's ``ResNet``, so timm's keyword arguments (``num_classes``,
``features_only``, ``in_chans``, ``global_pool``, ``drop_rate``, ...) and a timm ``config.json`` naming
these architectures work once ``ibzoo`` is imported.
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

__all__ = ["CifarResNet"]


class CifarResNet(ResNet):
    """timm's ``ResNet`` with a 3x3 stride-1 first convolution and no max-pool (for 32x32 inputs).

    The reference code pads the 3x3 conv by 2; we pad by 1 so the stem keeps the input's size, as in
    solo-learn and torchvision-style CIFAR ResNets.
    """

    def __init__(self, *args: Any, in_chans: int = 3, **kwargs: Any) -> None:
        if kwargs.get("stem_type", "") or kwargs.get("stem_width", 64) != 64:
            raise ValueError("CifarResNet has a fixed 3x3 stem: do not pass stem_type or stem_width.")
        super().__init__(*args, in_chans=in_chans, **kwargs)
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.maxpool = nn.Identity()
        # Both stride-2 steps of the ImageNet stem are gone, so every stage downsamples 4x less.
        for info in self.feature_info:
            info["reduction"] = max(1, info["reduction"] // 4)


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return build_model_with_cfg(CifarResNet, variant, pretrained, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 0,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bicubic",  # ibzoo.augment.INTERPOLATION, as trained
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        **kwargs,
    }


# Architectures only: pretrained weights live under the ibzoo model names (see ibzoo.models.zoo).
default_cfgs = generate_default_cfgs({"resnet18_cifar": _cfg(), "resnet50_cifar": _cfg()})


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool); 512-d features."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    return _create_cifar_resnet("resnet18_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-50 with the CIFAR stem (3x3 stride-1 conv, no max-pool); 2048-d features."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3))
    return _create_cifar_resnet("resnet50_cifar", pretrained, **dict(model_args, **kwargs))
