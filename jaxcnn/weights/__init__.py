"""Pretrained weights: torchvision state dicts -> Flax variables."""

from jaxcnn.weights.state_dict_io import read_state_dict, write_state_dict
from jaxcnn.weights.torchvision import convert_state_dict, load_pretrained, to_torch_state_dict

__all__ = ["read_state_dict", "write_state_dict", "convert_state_dict", "load_pretrained", "to_torch_state_dict"]
