from .block_prompts import BlockPrompts, prompt_counts
from .cvpt_vit import CVPTViT, PromptCrossAttention
from .davpt_vit import DAVPTViT
from .frozen_vit import FrozenViT
from .provenance import CheckpointMismatchError
from .trunk_weights import TrunkWeightsError, load_trunk_weights, save_random_trunk
from .vpt_deep_vit import VPTDeepViT

__all__ = ['BlockPrompts', 'CheckpointMismatchError', 'CVPTViT', 'DAVPTViT', 'FrozenViT',
           'PromptCrossAttention', 'TrunkWeightsError', 'VPTDeepViT', 'load_trunk_weights',
           'prompt_counts', 'save_random_trunk']
