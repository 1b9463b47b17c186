from .block_prompts import BlockPrompts, prompt_counts
from .cross_attention_prompts import CrossAttentionPrompts, PromptCrossAttention
from .cvpt_vit import CVPTViT
from .davpt_vit import DAVPTViT
from .frozen_vit import FrozenViT
from .provenance import CheckpointMismatchError
from .sequence_prompts import SequencePrompts
from .trunk_weights import TrunkWeightsError, load_trunk_weights
from .vpt_deep_vit import VPTDeepViT

__all__ = ['BlockPrompts', 'CheckpointMismatchError', 'CrossAttentionPrompts', 'CVPTViT',
           'DAVPTViT', 'FrozenViT', 'PromptCrossAttention', 'SequencePrompts',
           'TrunkWeightsError', 'VPTDeepViT', 'load_trunk_weights', 'prompt_counts']
