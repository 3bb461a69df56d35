"""Model definitions: the CIFAR-stem ResNets, the pretraining model, and the zoo: its catalogue of names
and recipes (``catalog.py``), data sets (``datasets.py``), publication state (``publication.py``) and
registration with timm (``zoo.py``)."""

from ibzoo.models import zoo  # noqa: F401  (registers every zoo name with timm)
from ibzoo.models.catalog import ModelInfo, get_model_info
from ibzoo.models.cifar_resnet import CifarResNet
from ibzoo.models.pretraining import SSLModel

__all__ = ["CifarResNet", "ModelInfo", "SSLModel", "get_model_info"]
