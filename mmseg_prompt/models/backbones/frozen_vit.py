"""A frozen timm ViT trunk as an mmseg backbone: the shared base of every prompt method.

The trunk is any timm ViT with a patch embedding and a stack of blocks (ViT-B/L/H, DeiT). It is
frozen: no parameter has ``requires_grad`` and the trunk stays in eval mode while the segmentor
trains (unless ``trunk_train_mode=True``). Prompt methods subclass :class:`FrozenViT` and override
:meth:`FrozenViT.forward_block`, the one place where a block runs, so that each method's file shows
only what it adds.
"""
from typing import Optional, Sequence

import timm
import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from .trunk_weights import load_trunk_weights

# The paper's trunk (methods.md): ViT-L/16, ImageNet-21k, the 'orig_in21k_ft_in1k' weights.
DEFAULT_MODEL = 'vit_large_patch16_384'


@MODELS.register_module()
class FrozenViT(BaseModule):
    """Frozen timm ViT returning multi-level NCHW feature maps, like mmseg's ``VisionTransformer``.

    Args:
        model_name: timm model name of the trunk.
        img_size: the training input size; the position embedding is resampled to its grid at
            load time and to each input's grid at run time.
        pretrained: local checkpoint file (see ``trunk_weights``); loaded at build time.
            ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (optionally with ``prefix``)
            is the alternative and is loaded by :meth:`init_weights`.
        out_indices: blocks whose outputs are returned (negative values count from the end).
        final_norm: apply the trunk's final LayerNorm to the last block's output, as mmseg's
            ViT does (only changes an output when the last block is in ``out_indices``).
        output_cls_token: return ``[feature_map, cls_token]`` pairs, mmseg ViT's format.
        trunk_train_mode: let the frozen trunk follow the segmentor's train mode, so that the
            dropout / drop-path asked for in ``model_kwargs`` is active. Off by default.
        model_kwargs: extra ``timm.create_model`` arguments (e.g. ``depth=3, embed_dim=64``).

    Input (B, C, H, W), any H and W: the patch embedding pads right and bottom to a multiple of
    the patch size, so 234x345 gives a 15x22 grid. Output: a tuple with one (B, D, ceil(H/p),
    ceil(W/p)) map per index in ``out_indices``.
    """

    def __init__(self,
                 model_name: str = DEFAULT_MODEL,
                 img_size=512,
                 pretrained: Optional[str] = None,
                 out_indices: Sequence[int] = (7, 11, 15, 23),
                 final_norm: bool = False,
                 output_cls_token: bool = False,
                 trunk_train_mode: bool = False,
                 model_kwargs: Optional[dict] = None,
                 init_cfg=None):
        _check_init_cfg(init_cfg, pretrained)
        super().__init__(init_cfg=init_cfg)
        self.model_name = model_name
        self.trunk = timm.create_model(
            model_name, pretrained=False, num_classes=0, img_size=img_size,
            dynamic_img_size=True, dynamic_img_pad=True, **(model_kwargs or {}))
        if not hasattr(self.trunk, 'blocks') or not hasattr(self.trunk, 'patch_embed'):
            raise ValueError(f'{model_name} is not a ViT with `patch_embed` and `blocks`; '
                             f'FrozenViT needs a timm VisionTransformer-style model.')
        depth = len(self.trunk.blocks)
        self.out_indices = _normalise_indices(out_indices, depth)
        self.final_norm = final_norm
        self.output_cls_token = output_cls_token
        if output_cls_token and self.trunk.cls_token is None:
            raise ValueError(f'output_cls_token=True, but {model_name} has no class token')
        self.trunk_train_mode = trunk_train_mode
        self.embed_dim = self.trunk.embed_dim
        self.num_prefix_tokens = self.trunk.num_prefix_tokens
        self._counts_logged = False
        if pretrained is not None:
            load_trunk_weights(self.trunk, pretrained, model_name)
        self.trunk.requires_grad_(False)

    @property
    def depth(self) -> int:
        return len(self.trunk.blocks)

    # ------------------------------------------------------------------ weights and modes
    def init_weights(self):
        """Load ``init_cfg`` Pretrained weights into the trunk through timm's filter.

        The trunk's own timm ``init_weights`` would re-randomise it, so it is never called.
        """
        cfg = self.init_cfg
        if cfg is not None and not self._is_init:
            load_trunk_weights(self.trunk, cfg['checkpoint'], self.model_name,
                               prefix=cfg.get('prefix', '') or '')
        self._is_init = True

    def train(self, mode: bool = True):
        """Put the tuned parts in ``mode`` and keep the frozen trunk in eval mode."""
        super().train(mode)
        if not self.trunk_train_mode:
            self.trunk.eval()
        if mode and not self._counts_logged:
            self._counts_logged = True
            total = sum(p.numel() for p in self.parameters())
            tuned = sum(p.numel() for p in self.parameters() if p.requires_grad)
            print_log(f'{type(self).__name__} ({self.model_name}): trainable params {tuned:,} / '
                      f'total {total:,} ({100 * tuned / max(total, 1):.4f}%)', logger='current')
        return self

    # ------------------------------------------------------------------ forward
    def embed(self, x: torch.Tensor):
        """Patch-embed, pad and add the position embedding resampled to the input's grid.

        Returns tokens (B, prefix + h*w, D) and the grid (h, w).
        """
        tokens = self.trunk.patch_embed(x)  # (B, h, w, D): dynamic_img_size keeps the grid
        grid = tokens.shape[1:3]
        tokens = self.trunk._pos_embed(tokens)
        tokens = self.trunk.patch_drop(tokens)
        return self.trunk.norm_pre(tokens), grid

    def forward_block(self, index: int, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run block ``index`` on tokens ``x`` (B, prefix + N, D). Prompt methods override this."""
        return block(x)

    def forward(self, x: torch.Tensor):
        B = x.shape[0]
        tokens, (h, w) = self.embed(x)
        outs = []
        last = self.depth - 1
        for i, block in enumerate(self.trunk.blocks):
            tokens = self.forward_block(i, block, tokens)
            if i not in self.out_indices:
                continue
            out = self.trunk.norm(tokens) if (self.final_norm and i == last) else tokens
            fmap = out[:, self.num_prefix_tokens:].reshape(B, h, w, -1).permute(0, 3, 1, 2)
            fmap = fmap.contiguous()
            outs.append([fmap, out[:, 0]] if self.output_cls_token else fmap)
        return tuple(outs)


def _normalise_indices(indices, depth):
    if isinstance(indices, int):
        indices = [indices]
    out = []
    for i in indices:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ValueError(f'out_indices has {i}, but the trunk has {depth} blocks '
                             f'(valid: 0..{depth - 1} or negative from the end)')
        out.append(j)
    return tuple(out)


def _check_init_cfg(init_cfg, pretrained):
    if init_cfg is None:
        return
    if not (isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'
            and 'checkpoint' in init_cfg):
        raise ValueError(
            f'FrozenViT accepts only init_cfg=dict(type="Pretrained", checkpoint=PATH[, '
            f'prefix=...]) for its frozen trunk; got {init_cfg!r}.')
    if pretrained is not None:
        raise ValueError('give the trunk weights once: either `pretrained` or `init_cfg`, not both')
