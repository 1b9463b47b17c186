from .frozen_vit import FrozenViT
from .trunk_weights import TrunkWeightsError, load_trunk_weights

__all__ = ['FrozenViT', 'TrunkWeightsError', 'load_trunk_weights']
