"""ibzoo: self-supervised image encoders whose projection heads are information bottlenecks.

    >>> import ibzoo
    >>> backbone = ibzoo.create_model("resnet18_cifar_simclr_topk")          # a timm model, pooled features
    >>> ssl_model = ibzoo.create_pretraining_model("resnet18_cifar_simclr_topk")  # + projector + objective

Importing ibzoo registers every zoo name (and the CIFAR-stem ResNets) with timm, so ``timm.create_model``
and ``timm.list_models`` know them too.
"""

import importlib
from types import ModuleType

from ibzoo.factory import create_model, create_pretraining_model, list_models, list_pretrained, model_info
from ibzoo.models import CifarResNet, ModelInfo, SSLModel
from ibzoo.version import __version__

__all__ = [
    "CifarResNet",
    "ModelInfo",
    "SSLModel",
    "__version__",
    "create_model",
    "create_pretraining_model",
    "list_models",
    "list_pretrained",
    "model_info",
]


# Submodules that messages and the README name as ``ibzoo.X.function`` (``ibzoo.hub.save_pretrained``),
# imported on first use: loading a model never imports the publishing code.
_LAZY_SUBMODULES = ("hub", "evaluation", "data", "model_card", "plotting", "training", "testing")


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"ibzoo.{name}")
    raise AttributeError(f"module 'ibzoo' has no attribute {name!r}")
