"""The two timm ViT families a frozen trunk can be, and how :class:`FrozenViT` runs each.

- **ViT** (``timm.models.vision_transformer``: ``VisionTransformer`` of ``Block``\\ s; ViT, DeiT,
  DINOv2): a position table added to the tokens once, at the input; ``block(x)``; LayerScale as
  the modules ``ls1``/``ls2`` (``nn.Identity`` when off).
- **Eva** (``timm.models.eva``: ``Eva`` of ``EvaBlock``\\ s; DINOv3, EVA-02): rotary position
  embedding (RoPE) applied inside every attention to the patch tokens' queries and keys, not to
  the prefix (class, register) tokens; ``block(x, rope=rope)``; LayerScale as the parameters
  ``gamma_1``/``gamma_2`` (None when off); a fused ``attn.qkv`` weight whose query and value
  biases are kept apart (``q_bias``, ``v_bias``; the key has none).

A family says how to embed an image (:meth:`TrunkFamily.embed`), how to run a block whole
(:meth:`~TrunkFamily.run_block`) and its two halves (:meth:`~TrunkFamily.attention`,
:meth:`~TrunkFamily.scale_attention`, :meth:`~TrunkFamily.scale_mlp`, used by ``block_steps``),
and which blocks it can run step by step. Prompts inserted in the sequence meet RoPE as prefix
tokens do: unrotated (:func:`rope_with_prompts`; docs/methods.md, "Prompts and RoPE").
"""
from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple, Optional, Tuple

import timm
import torch
import torch.nn as nn
from timm.models.eva import Eva, EvaBlock
from timm.models.vision_transformer import Block, VisionTransformer


class Embedded(NamedTuple):
    """An embedded image: ``tokens`` (B, prefix + N, D), the patch ``grid`` (h, w) with
    N = h w, and ``rope`` (..., N, 2 d): the patches' RoPE sines and cosines (None without)."""
    tokens: torch.Tensor
    grid: Tuple[int, int]
    rope: Optional[torch.Tensor]


class TrunkFamily(ABC):
    """How one family of timm trunk embeds an image and runs its blocks (module docstring)."""

    NAME: ClassVar[str] = ''
    BLOCK: ClassVar[type] = nn.Module  # the block class it runs step by step

    @abstractmethod
    def embed(self, trunk: nn.Module, x: torch.Tensor) -> Embedded:
        """x (B, C, H, W) -> tokens with prefix tokens and positions, grid, RoPE."""

    @abstractmethod
    def run_block(self, block: nn.Module, x: torch.Tensor,
                  rope: Optional[torch.Tensor]) -> torch.Tensor:
        """timm's own forward of ``block`` on x (B, T, D)."""

    @abstractmethod
    def attention(self, block: nn.Module, x: torch.Tensor,
                  rope: Optional[torch.Tensor]) -> torch.Tensor:
        """Attn(LN1(x)) of ``block``: (B, T, D) -> (B, T, D)."""

    @abstractmethod
    def scale_attention(self, block: nn.Module, a: torch.Tensor) -> torch.Tensor:
        """The first LayerScale of ``block`` applied to the attention's output."""

    @abstractmethod
    def scale_mlp(self, block: nn.Module, m: torch.Tensor) -> torch.Tensor:
        """The second LayerScale of ``block`` applied to the MLP's output."""

    def steppable(self, block: nn.Module) -> bool:
        """Whether ``block_steps`` can run ``block`` step by step (it is this family's block)."""
        return type(block) is self.BLOCK


class ViTFamily(TrunkFamily):
    NAME = 'VisionTransformer'
    BLOCK = Block

    def embed(self, trunk: nn.Module, x: torch.Tensor) -> Embedded:
        tokens = trunk.patch_embed(x)  # (B, h, w, D): dynamic_img_size keeps the grid
        grid = tuple(tokens.shape[1:3])
        # timm's only way to add its (resampled) position table and prefix tokens: a private
        # timm member; test_frozen_vit checks the result against timm's forward
        tokens = trunk.patch_drop(trunk._pos_embed(tokens))
        return Embedded(trunk.norm_pre(tokens), grid, None)

    def run_block(self, block, x, rope):
        return block(x)

    def attention(self, block, x, rope):
        return block.attn(block.norm1(x))

    def scale_attention(self, block, a):
        return block.ls1(a)

    def scale_mlp(self, block, m):
        return block.ls2(m)


class EvaFamily(TrunkFamily):
    NAME = 'Eva'
    BLOCK = EvaBlock

    def embed(self, trunk: nn.Module, x: torch.Tensor) -> Embedded:
        tokens = trunk.patch_embed(x)
        grid = tuple(tokens.shape[1:3])
        # Eva's _pos_embed (private, as ViT's) adds the prefix tokens and any position table,
        # and returns the RoPE of this grid; test_trunk_families checks it against timm's forward
        tokens, rope = trunk._pos_embed(tokens)
        return Embedded(trunk.norm_pre(tokens), grid, rope)

    def run_block(self, block, x, rope):
        return block(x, rope=rope)

    def attention(self, block, x, rope):
        return block.attn(block.norm1(x), rope=rope)

    def scale_attention(self, block, a):
        return a if block.gamma_1 is None else block.gamma_1 * a

    def scale_mlp(self, block, m):
        return m if block.gamma_2 is None else block.gamma_2 * m


VIT = ViTFamily()
EVA = EvaFamily()


def create_trunk(model_name: str, img_size, model_kwargs: Optional[dict] = None
                 ) -> Tuple[nn.Module, TrunkFamily]:
    """timm model ``model_name`` without a head, for inputs of any size (padded to the patch
    size), and its family; a ValueError naming the families FrozenViT runs otherwise."""
    try:
        trunk = timm.create_model(model_name, pretrained=False, num_classes=0, img_size=img_size,
                                  dynamic_img_size=True, dynamic_img_pad=True,
                                  **(model_kwargs or {}))
    except TypeError as e:  # a model class without these options, or a misspelt model_kwargs
        raise ValueError(f'timm could not build {model_name} as a frozen trunk ({e}): FrozenViT '
                         f'runs timm VisionTransformer (ViT, DeiT, DINOv2) and Eva (DINOv3, '
                         f'EVA-02) models; check model.backbone.model_name and model_kwargs'
                         ) from e
    return trunk, family_of(trunk, model_name)


def family_of(trunk: nn.Module, model_name: str) -> TrunkFamily:
    """The family of timm model ``trunk``; a ValueError naming the supported ones otherwise."""
    if isinstance(trunk, Eva):
        if trunk.rope_mixed:
            raise ValueError(f'{model_name} has a per-block (mixed) RoPE, which FrozenViT does '
                             f'not run; pick a model with one RoPE for every block (DINOv3, '
                             f'EVA-02)')
        return EVA
    if not isinstance(trunk, VisionTransformer):
        raise ValueError(f'{model_name} is a timm {type(trunk).__name__}; FrozenViT runs timm '
                         f'VisionTransformer (ViT, DeiT, DINOv2) and Eva (DINOv3, EVA-02) models: '
                         f'pick one of those for model.backbone.model_name')
    return VIT


def rope_with_prompts(rope: Optional[torch.Tensor], num_prompts: int) -> Optional[torch.Tensor]:
    """RoPE for [M prompts, N patches] after the prefix tokens: ``rope`` (..., N, 2 d) of the
    patches with M rows of sin = 0, cos = 1 in front, so that a prompt's query and key come out
    of the rotation x cos + rot(x) sin = x as they went in: unrotated, like a prefix token.
    """
    if rope is None or num_prompts == 0:
        return rope
    sin, cos = rope.new_zeros(()), rope.new_ones(())
    half = rope.shape[-1] // 2
    shape = (*rope.shape[:-2], num_prompts, half)
    identity = torch.cat([sin.expand(shape), cos.expand(shape)], dim=-1)
    return torch.cat([identity, rope], dim=-2)
