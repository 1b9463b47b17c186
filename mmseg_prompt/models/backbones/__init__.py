from .adaptformer import AdaptFormer
from .bitfit import BitFit
from .block_prompts import BlockPrompts, prompt_counts
from .cross_attention_prompts import CrossAttentionPrompts, PromptCrossAttention
from .cvpt_vit import CVPTViT
from .davpt_vit import DAVPTViT
from .frozen_vit import FrozenViT
from .kv_bias_deltas import KVBiasDeltas
from .lora import LoRA
from .provenance import CheckpointMismatchError
from .sequence_prompts import SequencePrompts
from .trunk_weights import TrunkWeightsError, load_trunk_weights
from .tuning_part import GuidedPromptsContract, TuningPart
from .vpt_deep_vit import VPTDeepViT

__all__ = ['AdaptFormer', 'BitFit', 'BlockPrompts', 'CheckpointMismatchError',
           'CrossAttentionPrompts', 'CVPTViT', 'DAVPTViT', 'FrozenViT', 'GuidedPromptsContract',
           'KVBiasDeltas', 'load_trunk_weights', 'LoRA', 'prompt_counts', 'PromptCrossAttention',
           'SequencePrompts', 'TrunkWeightsError', 'TuningPart', 'VPTDeepViT']
