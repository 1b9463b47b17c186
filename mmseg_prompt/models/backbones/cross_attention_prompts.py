"""Prompts that image tokens read through cross-attention, after self-attention (CVPT).

Per block l, with x (B, N, D) the residual stream, class token included (docs/methods.md, "CVPT"):

    x = x + DropPath(SelfAttn(LN1(x)))
    x = x + CrossAttn(x, P_l)          # no LayerNorm, no DropPath on this branch
    x = x + DropPath(MLP(LN2(x)))

CrossAttn uses the block's own frozen ``qkv`` and ``proj`` tensors (not copies) and its heads, so
self-attention stays on the N image tokens and the prompts cost O(N M D).

On a RoPE trunk (DINOv3) the cross-attention has no positions: neither the prompts' keys nor the
tokens' queries are rotated, so a token reads the prompts by content alone, as on a ViT, and both
forms below stay exact (docs/methods.md, "Prompts and RoPE").
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS

from .attention_projections import attention_tensors, autocast_dtype, qkv_project
from .block_indices import normalise_indices
from .block_prompts import BlockPrompts, prompt_counts, xavier_bound_3d
from .block_steps import Branch, BlockSteps, check_steppable
from .trunk_families import TrunkFamily, family_of
from .tuning_part import Record

# The name of a block's cross-attention output-dropout mask (CrossAttentionPrompts.block_masks).
OUTPUT_MASK = 'cross_output'


class PromptCrossAttention(nn.Module):
    """Multi-head cross-attention from tokens to prompts with a block's frozen attention weights.

        Q = x W_q + b_q,  K = P W_k + b_k,  V = P W_v + b_v      (the q/k/v slices of ``attn.qkv``)
        out = concat_h(softmax(Q_h K_h^T / sqrt(d_head)) V_h) W_o + b_o     (``attn.proj``)

    The attention module is passed at every call and never registered here, so its tensors are
    used as they are: frozen, shared, never copied. This module owns only the output dropout.

    Two exact forms (``fold``):

    - plain: project all N tokens to queries (N D^2), attend (SDPA), project out (N D^2);
    - folded: per head, W_q folds into the prompt keys, W_q,h K_h^T (D x M), and W_o into the
      prompt values, V_h W_o,h (M x D), so the tokens meet (D x H M) and (H M x D) matrices:
      about 2 N H M D instead of 2 N D^2 + 2 N M D. ``fold='auto'`` picks it when H M < D.
      It needs the block's q/k norms and attention-output norm to be identities (true for
      ViT/DeiT); otherwise the plain form runs.

    Keys, values and the folded matrices depend on the prompts only: computed once per forward
    when the prompts are shared by the batch (M, D), per sample when they are (B, M, D).
    """

    FOLD_MODES = ('auto', 'always', 'never')

    def __init__(self, proj_drop: float = 0.0, fold: str = 'auto'):
        super().__init__()
        if fold not in self.FOLD_MODES:
            raise ValueError(f'fold must be one of {self.FOLD_MODES}, got {fold!r}')
        if not 0.0 <= proj_drop < 1.0:
            raise ValueError(f'cross_proj_drop must be in [0, 1), got {proj_drop}')
        self.fold = fold
        self.proj_drop = proj_drop

    @staticmethod
    def foldable(attn: nn.Module) -> bool:
        return all(isinstance(getattr(attn, n), nn.Identity) for n in ('q_norm', 'k_norm', 'norm'))

    def use_fold(self, attn: nn.Module, num_prompts: int, dim: int,
                 device_type: str = 'cpu') -> bool:
        """Whether the folded form runs for ``num_prompts`` prompts of width ``dim`` on a
        ``device_type`` device. 'auto' follows what costs there (docs/methods.md, "Choosing
        the form"): on a CPU the arithmetic, so the folded form when H M < D; on an
        accelerator at the configs' batch sizes the kernel launches, which the plain form has
        fewer of, so the plain form."""
        if self.fold == 'never' or not self.foldable(attn):
            if self.fold == 'always':
                raise ValueError('fold="always" needs identity q_norm, k_norm and norm in the '
                                 'attention (a plain ViT); use fold="auto"')
            return False
        if self.fold == 'always':
            return True
        return device_type == 'cpu' and attn.num_heads * num_prompts < dim

    def forward(self, x: torch.Tensor, prompts: torch.Tensor, attn: nn.Module,
                drop_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, N, D); prompts (M, D), shared by the batch, or (B, M, D); returns (B, N, D),
        times ``drop_mask`` (B, N, D) when given (the output dropout, ``dropout_masks``)."""
        D = x.shape[-1]
        heads, head_dim = attn.num_heads, attn.head_dim
        device = x.device.type
        tensors = attention_tensors(attn, device)  # cast once per block under autocast
        if prompts.dtype != x.dtype and autocast_dtype(device) is None:
            prompts = prompts.to(x.dtype)
        # Keys and values depend on the prompts only: once per forward when they are shared.
        # Per-sample prompts laid out (M, B, D) are projected in that order (one matmul).
        if prompts.dim() == 3 and prompts.transpose(0, 1).is_contiguous():
            kv = qkv_project(attn, prompts.transpose(0, 1), 'kv', tensors).transpose(0, 1)
        else:
            kv = qkv_project(attn, prompts, 'kv', tensors)
        # (.., M, 2, H, d) -> (.., 2, H, M, d) -> k, v (.., H, M, d)
        k, v = kv.unflatten(-1, (2, heads, head_dim)).movedim(-4, -2).unbind(-4)
        if self.use_fold(attn, prompts.shape[-2], D, device):
            out = self._folded(x, k, v, attn, tensors)
        else:
            out = self._plain(x, k, v, attn, tensors)
        return out if drop_mask is None else out * drop_mask

    @staticmethod
    def _plain(x, k, v, attn, tensors):
        B, N, _ = x.shape
        heads, head_dim = attn.num_heads, attn.head_dim
        width = heads * head_dim
        q = qkv_project(attn, x, 'q', tensors).view(B, N, heads, head_dim).transpose(1, 2)
        q, k = attn.q_norm(q), attn.k_norm(k)                                   # (B, H, N, d)
        if k.dim() == 3:
            k, v = k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)  # (B, H, N, d)
        out = attn.norm(out.transpose(1, 2).reshape(B, N, width))
        return F.linear(out, tensors.proj_weight, tensors.proj_bias)

    @staticmethod
    def _folded(x, k, v, attn, tensors):
        """softmax_h(x K~_h + c_h) V~_h summed over heads, + b_o, with
        K~_h = W_q,h^T K_h^T scale (D, M), c_h = b_q,h K_h^T scale, V~_h = V_h W_o,h^T (M, D).

        The folded matrices are built contiguous as (.., H M, D) rows, so both products are one
        addmm (shared prompts) or baddbmm (per sample) with the bias fused. Rows are ordered
        (prompt, head) when M < 16: the per-head softmax then reduces over a strided axis, which
        PyTorch's CPU kernel runs 4-16x faster than over a last axis shorter than its vectors.
        """
        heads, head_dim = attn.num_heads, attn.head_dim
        width = heads * head_dim
        M = k.shape[-2]
        w, b = tensors.qkv_weight, tensors.qkv_bias
        w_q = w[:width].view(heads, head_dim, -1).to(k.dtype)                 # (H, d, D)
        w_o = tensors.proj_weight.view(-1, heads, head_dim).permute(1, 2, 0)  # (H, d, D)
        k_fold = _per_head_matmul(k, w_q) * attn.scale                         # (.., H, M, D)
        v_fold = _per_head_matmul(v, w_o.to(v.dtype))                          # (.., H, M, D)
        c = None
        if b is not None:
            c = (k @ b[:width].view(heads, head_dim, 1).to(k.dtype)).squeeze(-1) * attn.scale
        prompts_outer = M < 16
        if prompts_outer:  # rows (m, h)
            k_fold, v_fold = k_fold.transpose(-3, -2), v_fold.transpose(-3, -2)
            c = None if c is None else c.transpose(-2, -1)
        # the products' dtype: autocast's (the folded matrices already are), else x's
        dtype = autocast_dtype(x.device.type) or x.dtype
        k_fold, v_fold = k_fold.flatten(-3, -2).to(dtype), v_fold.flatten(-3, -2).to(dtype)
        c = None if c is None else c.flatten(-2).to(dtype)                    # (.., H M)
        b_o = tensors.proj_bias
        b_o = None if b_o is None else b_o.to(dtype)
        if k_fold.dim() == 2:                                                  # shared prompts
            logits = F.linear(x, k_fold, c)                                    # (B, N, H M)
        else:
            logits = _bmm_bias(c, x, k_fold.transpose(1, 2))
        groups = logits.unflatten(-1, (M, heads) if prompts_outer else (heads, M))
        probs = groups.softmax(dim=-2 if prompts_outer else -1).flatten(-2)
        if v_fold.dim() == 2:
            return F.linear(probs, v_fold.t(), b_o)                            # (B, N, D)
        return _bmm_bias(b_o, probs, v_fold)


def _per_head_matmul(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """t (H, M, d) or (B, H, M, d) times per-head w (H, d, D): (.., H, M, D), one bmm over heads
    (the weights are not expanded to the batch)."""
    if t.dim() == 3:
        return torch.bmm(t, w)
    out = torch.bmm(t.transpose(0, 1).flatten(1, 2), w)                        # (H, B M, D)
    return out.unflatten(1, (t.shape[0], -1)).transpose(0, 1)


def _bmm_bias(bias, a, b):
    """a @ b (batched) + bias, fused when there is a bias."""
    return torch.bmm(a, b) if bias is None else torch.baddbmm(bias.unsqueeze(-2), a, b)

@MODELS.register_module()
class CrossAttentionPrompts(BlockPrompts):
    """CVPT's per-block prompts and their cross-attention, a part of :class:`FrozenViT`.

    Args:
        embed_dim, depth: the trunk's (the backbone passes them).
        num_prompts: M_l per block, an int or one count per block (0: the block runs as is).
        dropout: prompt dropout, per sample (CVPT segmentation: 0.1).
        proj_drop: dropout on the cross-attention output projection (CVPT segmentation: 0.1).
        fold: 'auto', 'always' or 'never' (see :class:`PromptCrossAttention`).
        guided_blocks: blocks whose prompts metric guidance may guide (neither paper does).
        num_guided_prompts: M of each guided block (None: keep its count in ``num_prompts``).

    Init as CVPT's (depth, M, D) xavier-uniform tensor: bound sqrt(6 / (D (M_l + depth))).
    """

    METHOD = 'CVPT'  # what guided prompts train as without the metric loss
    READS_TRUNK_WEIGHTS = True  # the cross-attention uses each block's qkv and proj tensors
    PROMPTS_FIRST = True
    TOKEN_SIDES = ('cross_query',)
    PROMPT_SIDES = ('cross_key',)

    def __init__(self,
                 embed_dim: int,
                 depth: int,
                 num_prompts: Union[int, Sequence[int]] = 10,
                 dropout: float = 0.1,
                 proj_drop: float = 0.1,
                 fold: str = 'auto',
                 guided_blocks: Sequence[int] = (),
                 num_guided_prompts: Optional[int] = None):
        counts = prompt_counts(num_prompts, depth)
        guided = normalise_indices(guided_blocks, depth, 'guided_blocks')
        for i in guided:
            if num_guided_prompts is not None:
                counts[i] = num_guided_prompts
            if counts[i] == 0:
                raise ValueError(f'guided block {i} has no prompts to guide: give it '
                                 f'num_prompts > 0')
        bounds = [xavier_bound_3d(embed_dim, m, depth) for m in counts]
        super().__init__(counts, embed_dim, bounds, dropout)
        self.guided_blocks: Tuple[int, ...] = guided
        self.cross_attn = PromptCrossAttention(proj_drop, fold=fold)

    def attach(self, trunk: nn.Module, model_name: str) -> None:
        """CVPT adds a branch to each prompted block: check that it is a block run step by step
        (timm's ``Block`` or ``EvaBlock``) with a fused qkv attention."""
        family = family_of(trunk, model_name)
        for i, m in enumerate(self.counts):
            if m > 0:
                _check_block(trunk.blocks[i], i, model_name, family)

    def after_attention(self, index: int, block: nn.Module) -> Optional[Branch]:
        """The cross-attention of block ``index``'s tokens to its prompts, or None (no prompts,
        or switched off)."""
        if self.block_keys[index] is None:
            return None
        attn = block.attn
        drop_mask = self.block_mask(index, OUTPUT_MASK)

        def cross_attention(x: torch.Tensor) -> torch.Tensor:
            return self.cross_attn(x, self.for_batch(index, x.shape[0]), attn, drop_mask)
        return cross_attention

    def prompt_dtype(self, tokens: torch.Tensor) -> Optional[torch.dtype]:
        """Under autocast, its dtype: the key/value projections take the prompts cast once per
        forward for every block."""
        return autocast_dtype(tokens.device.type)

    def block_masks(self, index: int, batch: int, tokens: int
                    ) -> Dict[str, Tuple[Tuple[int, ...], float]]:
        """The prompts' mask, then ``OUTPUT_MASK``, the cross-attention output's (B, T, D),
        when active."""
        out = super().block_masks(index, batch, tokens)
        if self.training and self.cross_attn.proj_drop > 0:
            out[OUTPUT_MASK] = ((batch, tokens, self.dim), self.cross_attn.proj_drop)
        return out

    def guidance(self, index: int, steps: BlockSteps, start: int) -> Dict[str, torch.Tensor]:
        """A guided block's record: the patches' stream where the cross-attention queries it,
        and the block's output class token."""
        return dict(queried=steps.queried[:, start:], cls=steps.out[:, 0])

    def metric_features(self, record: Record, blocks: nn.ModuleList, index: int,
                        token_side: str, prompt_side: str
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The very vectors of the cross-attention logit of block ``index``: queries
        x W_q + b_q of the patches (B, N, D) and keys P W_k + b_k of the prompts (M, D), plus
        the block's output class token (B, D)."""
        attn = blocks[index].attn
        g = record[index]
        return (qkv_project(attn, g['queried'], 'q'), qkv_project(attn, self.get(index), 'k'),
                g['cls'])


def _check_block(block: nn.Module, index: int, model_name: str, family: TrunkFamily):
    """CVPT runs a timm block step by step and reuses its attention's tensors: check that
    block ``index`` has them."""
    check_steppable(block, index, model_name, family, 'CVPTViT', f'set num_prompts[{index}] = 0')
    attn = block.attn
    qkv = getattr(attn, 'qkv', None)
    missing = [f'attn.{n}' for n in ('qkv', 'proj', 'num_heads', 'head_dim', 'scale', 'q_norm',
                                     'k_norm', 'norm') if not hasattr(attn, n)]
    if missing or not isinstance(qkv, nn.Linear) or \
            qkv.out_features != 3 * attn.num_heads * attn.head_dim:
        raise ValueError(
            f'CVPTViT needs timm ViT blocks with a fused qkv attention; block {index} of '
            f'{model_name} ({type(block).__name__}) does not fit (missing: '
            f'{missing or "fused qkv"}). Use a ViT, DeiT, DINOv2 or DINOv3 model or set '
            f'num_prompts[{index}] = 0.')
    if getattr(attn, 'gate', None) is not None:
        raise ValueError(f'CVPTViT does not support gated attention (block {index} of '
                         f'{model_name}); set num_prompts[{index}] = 0 or pick another trunk.')
