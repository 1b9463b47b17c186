"""DA-VPT (CVPR 2025): VPT-Deep whose guided blocks carry prompts that act as class proxies.

The backbone is VPT-Deep plus two things (docs/methods.md):

- the guided blocks (default: the last) carry M guided prompts, one per cluster of classes, and
  record what the metric loss compares: the block's attention output at the patch tokens (the
  paper) or the block's input there (the code), the prompts, and the output class token;
- ``bias_tuning=True`` gives DA-VPT+: an additive delta on the key and value parts of every
  block's qkv bias trains; the pretrained bias tensor itself never changes.

The loss itself lives in the segmentor (``MetricGuidedEncoderDecoder``), which has the labels.
"""
import logging
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmseg.registry import MODELS
from torch.func import functional_call

from .attention_projections import qkv_project
from .frozen_vit import _normalise_indices
from .vpt_deep_vit import VPTDeepViT


@MODELS.register_module()
class DAVPTViT(VPTDeepViT):
    """Frozen timm ViT with VPT-Deep prompts, metric-guided prompts and optional K/V bias tuning.

    Args:
        num_prompts: VPT-Deep prompts of the unguided blocks (int or per-block list).
        guided_blocks: blocks whose prompts are class proxies (negative counts from the end).
        num_guided_prompts: M, prompts (= clusters of classes) in each guided block.
        bias_tuning: DA-VPT+: train a (2, D) delta on the K and V bias of every block.
        **kwargs: :class:`VPTDeepViT` / :class:`FrozenViT` arguments.

    After a forward, ``self.guidance[i]`` for each guided block i holds ``attn_out`` and
    ``block_in`` (B, N, D) at the patch tokens, ``prompts`` (M, D) (the raw parameters) and
    ``cls`` (B, D), the block's output class token.
    """

    def __init__(self,
                 num_prompts: Union[int, Sequence[int]] = 10,
                 guided_blocks: Sequence[int] = (-1,),
                 num_guided_prompts: int = 20,
                 bias_tuning: bool = False,
                 **kwargs):
        self._guided_spec = tuple(guided_blocks)
        if num_guided_prompts < 1:
            raise ValueError(f'num_guided_prompts must be >= 1, got {num_guided_prompts}')
        self.num_guided_prompts = num_guided_prompts
        super().__init__(num_prompts=num_prompts, **kwargs)
        self.guided_blocks = _normalise_indices(self._guided_spec, self.depth)
        if self.trunk.cls_token is None:
            raise ValueError(f'DA-VPT compares prompts with the class token, but '
                             f'{self.model_name} has none')
        self.bias_tuning = bias_tuning
        if bias_tuning:
            for i, block in enumerate(self.trunk.blocks):
                if block.attn.qkv.bias is None:
                    raise ValueError(f'bias_tuning=True, but block {i} of {self.model_name} '
                                     f'has no qkv bias')
            self.kv_bias_delta = nn.Parameter(torch.zeros(self.depth, 2, self.embed_dim))
        self.guidance: Dict[int, Dict[str, torch.Tensor]] = {}
        self.metric_guided = False  # MetricGuidedEncoderDecoder sets it
        self._plain_warned = False

    def weights_layout(self) -> dict:
        """VPT-Deep's layout (the counts include the guided prompts) plus the guided blocks
        and DA-VPT+'s bias tuning."""
        return dict(super().weights_layout(), guided_blocks=list(self.guided_blocks),
                    bias_tuning=self.bias_tuning)

    def block_prompt_counts(self, num_prompts) -> list:
        counts = super().block_prompt_counts(num_prompts)
        for i in _normalise_indices(self._guided_spec, len(counts)):
            counts[i] = self.num_guided_prompts
        return counts

    def _qkv_bias(self, index: int, block: nn.Module) -> Optional[Dict[str, torch.Tensor]]:
        """The block's qkv bias with the K/V delta added (a new tensor), or None."""
        if not self.bias_tuning:
            return None
        delta = self.kv_bias_delta[index].flatten()  # (2D,) = [dk, dv]
        bias = block.attn.qkv.bias
        return {'qkv.bias': bias + torch.cat([delta.new_zeros(bias.numel() - delta.numel()),
                                              delta])}

    def train(self, mode: bool = True):
        super().train(mode)
        self._warn_if_unguided()
        return self

    def _warn_if_unguided(self):
        """Warn once when training without the metric guidance (eager code only: logging in a
        traced forward would break a torch.compile graph, so ``train()`` warns too)."""
        if self.training and not self.metric_guided and not self._plain_warned:
            self._plain_warned = True
            print_log('DAVPTViT is training without metric guidance, i.e. as VPT-Deep: the '
                      'guidance needs model.type="MetricGuidedEncoderDecoder"',
                      logger='current', level=logging.WARNING)

    def forward(self, x):
        self.guidance = {}
        if not torch.compiler.is_compiling():  # a module starts in training mode, train() or not
            self._warn_if_unguided()
        return super().forward(x)

    TOKEN_SIDES = ('attn_out', 'block_in')
    PROMPT_SIDES = ('query', 'raw')

    def metric_features(self, index: int, token_side: str = 'attn_out',
                        prompt_side: str = 'query'
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the metric loss compares in guided block ``index``, after a forward.

        token_side: 'attn_out' (the paper: the block's attention output) or 'block_in' (the
        code: the block's input). prompt_side: 'query' (the paper: P W_q + b_q) or 'raw' (the
        code). Returns tokens (B, N, D) at the patches, prompts (M, D), cls (B, D).
        """
        if token_side not in self.TOKEN_SIDES or prompt_side not in self.PROMPT_SIDES:
            raise ValueError(f'DAVPTViT offers token_side in {self.TOKEN_SIDES} and prompt_side '
                             f'in {self.PROMPT_SIDES}; got {token_side!r}, {prompt_side!r}')
        g = self.guidance[index]
        prompts = self.prompt_queries(index) if prompt_side == 'query' else g['prompts']
        return g[token_side], prompts, g['cls']

    def forward_block(self, index: int, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        guided = index in self.guided_blocks
        bias = self._qkv_bias(index, block)
        if not guided and bias is None:
            return super().forward_block(index, block, x)
        x, m = self.insert_prompts(index, x)
        n = self.num_prefix_tokens
        x_in = x
        normed = block.norm1(x)
        attn = block.attn(normed) if bias is None else functional_call(block.attn, bias, (normed,))
        x = x + block.drop_path1(block.ls1(attn))
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        if guided:
            self.guidance[index] = dict(attn_out=attn[:, n + m:], block_in=x_in[:, n + m:],
                                        prompts=self.prompts.get(index), cls=x[:, 0])
        return self.remove_prompts(x, m)

    def prompt_queries(self, index: int) -> torch.Tensor:
        """The guided prompts of block ``index`` through its frozen query projection, P W_q + b_q
        (M, D): the paper's prompt side of the metric loss."""
        return qkv_project(self.trunk.blocks[index].attn, self.prompts.get(index), 'q')
