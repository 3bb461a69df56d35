"""Model definitions: the CIFAR-stem ResNets, the pretraining model and the zoo's name table."""

from ibzoo.models.cifar_resnet import CifarResNet
from ibzoo.models.pretraining import SSLModel
from ibzoo.models.zoo import ModelInfo, get_model_info

__all__ = ["CifarResNet", "ModelInfo", "SSLModel", "get_model_info"]
