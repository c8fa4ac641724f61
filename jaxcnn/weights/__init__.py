"""Pretrained weights: torchvision state dicts (plain, or wrapped with a normalization) -> Flax variables."""

from jaxcnn.weights.normalization import Normalization, NormalizationWarning, Renormalized, unwrap
from jaxcnn.weights.state_dict_io import read_state_dict, write_state_dict
from jaxcnn.weights.torchvision import convert_state_dict, load_pretrained, to_torch_state_dict

__all__ = ["read_state_dict", "write_state_dict", "convert_state_dict", "load_pretrained", "to_torch_state_dict",
           "Normalization", "NormalizationWarning", "Renormalized", "unwrap"]
