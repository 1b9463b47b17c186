"""A frozen timm ViT trunk as an mmseg backbone: the shared base of every prompt method.

The trunk is any timm ViT with a patch embedding and a stack of blocks (ViT-B/L/H, DeiT). It is
frozen: no parameter has ``requires_grad`` and the trunk stays in eval mode while the segmentor
trains (unless ``trunk_train_mode=True``). The tuning methods are parts that combine by
configuration over this one base (docs/methods.md, "Composition"):

- ``prompts=dict(type='SequencePrompts', ...)`` (VPT-Deep, DA-VPT's guided prompts) or
  ``dict(type='CrossAttentionPrompts', ...)`` (CVPT): per-block prompt tokens and how a block
  uses them (``run_block``), built from the sub-config like any mmseg module;
- ``bias_tuning=True`` (DA-VPT+): trained deltas on every block's key/value bias.

The registered ``VPTDeepViT``, ``CVPTViT`` and ``DAVPTViT`` are these combinations under the
names (and options) their configs and checkpoints use.

Metric guidance reads the guided blocks' features through :meth:`FrozenViT.forward_guided`, which
returns them with the feature maps; nothing is stored on the backbone between calls.
"""
import logging
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.utils.checkpoint import checkpoint

from ..utils.state_dict_diff import diff_state_dict
from . import provenance
from .block_prompts import BlockPrompts, normalise_indices
from .kv_bias_deltas import attach_kv_bias_deltas, check_qkv_biases
from .provenance import PROVENANCE_KEY, tensors_sha256
from .trunk_weights import TrunkWeightsError, load_trunk_weights

# Per guided block: the tensors its prompt part records for the metric loss (see forward_guided).
Guidance = Dict[int, Dict[str, torch.Tensor]]
Features = Tuple[Union[torch.Tensor, list], ...]

# The paper's trunk (docs/methods.md): ViT-L/16, ImageNet-21k, the 'orig_in21k_ft_in1k' weights.
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
        with_cp: activation checkpointing of every block while training: the frozen blocks'
            activations are recomputed in the backward pass instead of stored (gradients still
            flow through them to the prompts). Saves memory, costs one more forward.
        allow_other_trunk: load a tuned-only checkpoint trained with another frozen trunk than
            this one (another file of the same architecture) with a warning instead of an error.
        prompts: the prompt part's sub-config (``type`` 'SequencePrompts' or
            'CrossAttentionPrompts' and its options); None: no prompts (linear probing).
        bias_tuning: train a (depth, 2, D) delta ``kv_bias_delta`` on every block's key and
            value bias (DA-VPT+; see ``kv_bias_deltas.py``).

    Checkpoints: ``state_dict()`` leaves the frozen trunk out and adds ``provenance``, a record
    of the trunk's sha256, the backbone type and :meth:`weights_layout` (see ``provenance.py``);
    loading checks it (:meth:`_load_from_state_dict`).

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
                 with_cp: bool = False,
                 allow_other_trunk: bool = False,
                 prompts: Optional[dict] = None,
                 bias_tuning: bool = False,
                 init_cfg: Optional[dict] = None):
        _check_init_cfg(init_cfg, pretrained)
        super().__init__(init_cfg=init_cfg)
        self.model_name = model_name
        self.trunk = timm.create_model(
            model_name, pretrained=False, num_classes=0, img_size=img_size,
            dynamic_img_size=True, dynamic_img_pad=True, **(model_kwargs or {}))
        if not hasattr(self.trunk, 'blocks') or not hasattr(self.trunk, 'patch_embed'):
            raise ValueError(f'{model_name} is not a ViT with `patch_embed` and `blocks`; '
                             f'FrozenViT needs a timm VisionTransformer-style model.')
        patch = self.trunk.patch_embed.patch_size
        sizes = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if any(s % p for s, p in zip(sizes, patch)):
            raise ValueError(f'img_size={img_size} does not fit the patch size {tuple(patch)} of '
                             f'{model_name}: use a multiple of it (model.backbone.img_size)')
        depth = len(self.trunk.blocks)
        self.out_indices = normalise_indices(out_indices, depth)
        self.final_norm = final_norm
        self.output_cls_token = output_cls_token
        if output_cls_token and self.trunk.cls_token is None:
            raise ValueError(f'output_cls_token=True, but {model_name} has no class token')
        self.trunk_train_mode = trunk_train_mode
        self.with_cp = with_cp
        self.img_size = sizes
        self.allow_other_trunk = allow_other_trunk
        self.embed_dim = self.trunk.embed_dim
        self.num_prefix_tokens = self.trunk.num_prefix_tokens
        self._counts_logged = False
        # Where the frozen trunk came from; None while it is randomly initialised.
        self.trunk_source: Optional[str] = None
        # The frozen trunk's sha256: computed when first needed after each trunk load.
        self._trunk_sha256: Optional[str] = None
        # Checkpoints hold only what trains; the export tool sets this to save the trunk too.
        self.save_frozen_trunk = False
        self._with_provenance = True  # False while loading compares state dicts
        self._unguided_warned = False
        if pretrained is not None:
            load_trunk_weights(self.trunk, pretrained, model_name)
            self._trunk_loaded(str(pretrained))
        self.trunk.requires_grad_(False)
        self.prompts: Optional[BlockPrompts] = None
        if prompts is not None:
            self.prompts = MODELS.build(prompts, default_args=dict(
                embed_dim=self.embed_dim, depth=depth, patch_size=tuple(patch),
                in_chans=self.trunk.patch_embed.proj.in_channels))
            if hasattr(self.prompts, 'check_trunk'):
                self.prompts.check_trunk(self.trunk.blocks, model_name)
        self.bias_tuning = bias_tuning
        if bias_tuning:
            check_qkv_biases(self.trunk.blocks, model_name)
            self.kv_bias_delta = nn.Parameter(torch.zeros(depth, 2, self.embed_dim))
            attach_kv_bias_deltas(self.trunk.blocks, self.kv_bias_delta)
        # state_dict(): the frozen trunk out, then the provenance record in (in this order)
        self.register_state_dict_post_hook(_drop_frozen_trunk)
        self.register_state_dict_post_hook(_add_provenance)

    @property
    def depth(self) -> int:
        return len(self.trunk.blocks)

    # ------------------------------------------------------------------ weights and modes
    def init_weights(self) -> None:
        """Load ``init_cfg`` Pretrained weights into the trunk through timm's filter.

        The trunk's own timm ``init_weights`` would re-randomise it, so it is never called.
        """
        cfg = self.init_cfg
        if cfg is not None and not self._is_init:
            load_trunk_weights(self.trunk, cfg['checkpoint'], self.model_name,
                               prefix=cfg.get('prefix', '') or '')
            self._trunk_loaded(str(cfg['checkpoint']))
        self._is_init = True

    def _trunk_loaded(self, source: str) -> None:
        """Record where the trunk now comes from; its fingerprint is computed again when
        needed."""
        self.trunk_source = source
        self._trunk_sha256 = None

    # ------------------------------------------------------------------ provenance
    def frozen_trunk_tensors(self) -> List[Tuple[str, torch.Tensor]]:
        """(name, tensor) of every frozen trunk tensor, in state-dict order."""
        tuned = self.tuned_trunk_names()
        return [(n, t) for n, t in self.trunk.state_dict().items() if n not in tuned]

    def trunk_sha256(self) -> str:
        """sha256 of the frozen trunk (names, shapes, dtypes, bytes), computed once per trunk
        load (a ViT-L trunk takes seconds) and cached."""
        if self._trunk_sha256 is None:
            self._trunk_sha256 = tensors_sha256(self.frozen_trunk_tensors())
        return self._trunk_sha256

    def weights_layout(self) -> dict:
        """The options, by ``model.backbone`` key, that give the tuned weights their meaning
        beyond their shapes: which features the neck gets, the prompt part's counts and guided
        blocks, the bias tuning."""
        layout = dict(out_indices=list(self.out_indices), final_norm=self.final_norm,
                      bias_tuning=self.bias_tuning)
        if self.prompts is not None:
            layout.update(self.prompts.weights_layout())
        return layout

    def provenance(self, with_trunk: bool = True) -> dict:
        """The record a checkpoint carries (see ``provenance.py``); ``with_trunk=False``
        leaves the trunk's fingerprint out (not computed)."""
        trunk = dict(sha256=self.trunk_sha256(), source=self.trunk_source) if with_trunk \
            else None
        return dict(format=provenance.FORMAT, backbone=type(self).__name__,
                    model_name=self.model_name, img_size=list(self.img_size), trunk=trunk,
                    layout=self.weights_layout())

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Load a tuned-only checkpoint (the trunk is kept from the pretrained file) or a full one.

        Anything that would leave this backbone silently different from the checkpoint's is an
        error: a tuned-only checkpoint without a pretrained trunk to put back, tuned tensors
        (prompts, ...) missing, extra or of another shape (another prompt count, another width),
        and a provenance record naming another backbone type, another layout or (tuned-only
        checkpoints) another frozen trunk. A checkpoint without the record (written before it
        existed) loads with a warning.
        """
        trunk_prefix = prefix + 'trunk.'
        saved = state_dict.pop(prefix + PROVENANCE_KEY, None)
        own_trunk = self.trunk.state_dict()
        in_ckpt = {k[len(trunk_prefix):] for k in state_dict if k.startswith(trunk_prefix)}
        tuned = self.tuned_trunk_names()
        frozen = {k for k in own_trunk if k not in tuned}
        tuned_only = not frozen & in_ckpt
        if tuned_only:  # put the pretrained trunk back
            if self.trunk_source is None and self.init_cfg is not None:
                self.init_weights()
            if self.trunk_source is None:
                raise TrunkWeightsError(
                    f'the checkpoint holds only the tuned weights of {type(self).__name__} (no '
                    f'`{trunk_prefix}*` keys) and this backbone has no trunk to put back: set '
                    f'`model.backbone.pretrained` to the trunk file the run was trained with, or '
                    f'load a full checkpoint (tools/export_full_checkpoint.py)')
            for name in frozen:
                state_dict[trunk_prefix + name] = own_trunk[name]
        else:
            _check_tensors(state_dict, trunk_prefix, own_trunk, 'the frozen trunk',
                           f'a full checkpoint of another trunk than {self.model_name}')
        self._with_provenance = False
        try:
            tuned = {k: v for k, v in self.state_dict().items() if not k.startswith('trunk.')}
        finally:
            self._with_provenance = True
        _check_tensors(state_dict, prefix, tuned, f'{type(self).__name__}\'s tuned weights',
                       'a checkpoint trained with other prompt settings (num_prompts, '
                       'model_name, embed_dim) or another backbone type', extra_ok=('trunk.',))
        self._check_provenance(saved, prefix + PROVENANCE_KEY, tuned_only)
        if tuned_only:
            print_log(f'{type(self).__name__}: the checkpoint holds tuned weights only; the frozen '
                      f'trunk stays as loaded from {self.trunk_source} (sha256 '
                      f'{self.trunk_sha256()[:16]})', logger='current')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if not tuned_only:  # the trunk now is the checkpoint's
            self._trunk_loaded('a full checkpoint')

    def _check_provenance(self, saved, key: str, tuned_only: bool):
        """Compare the checkpoint's provenance record with this backbone's (the trunk too for
        a tuned-only checkpoint); a checkpoint without one loads with a warning."""
        if saved is None:
            print_log(f'{type(self).__name__}: the checkpoint has no `{key}` (it was written '
                      f'before checkpoints recorded their frozen trunk, backbone type and prompt '
                      f'layout), so none of them can be checked: make sure '
                      f'model.backbone.pretrained is the trunk it was trained with. Checkpoints '
                      f'saved from now on carry the record.', logger='current',
                      level=logging.WARNING)
            return
        note = provenance.compare(provenance.decode(saved, key),
                                  self.provenance(with_trunk=tuned_only), key,
                                  check_trunk=tuned_only, allow_other_trunk=self.allow_other_trunk)
        if note:
            print_log(f'{type(self).__name__}: {note}', logger='current', level=logging.WARNING)

    def tuned_trunk_names(self) -> set:
        """Names of trunk parameters that train (none unless a method unfreezes some)."""
        return {n for n, p in self.trunk.named_parameters() if p.requires_grad}

    def train(self, mode: bool = True) -> 'FrozenViT':
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

    @contextmanager
    def prompts_disabled(self) -> Iterator[None]:
        """Run as the plain frozen trunk inside the block (prompt methods honour it)."""
        prompts = getattr(self, 'prompts', None)
        if prompts is None:
            yield
            return
        prompts.enabled = False
        try:
            yield
        finally:
            prompts.enabled = True

    # ------------------------------------------------------------------ forward
    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patch-embed, pad and add the position embedding resampled to the input's grid.

        Returns tokens (B, prefix + h*w, D) and the grid (h, w).
        """
        tokens = self.trunk.patch_embed(x)  # (B, h, w, D): dynamic_img_size keeps the grid
        grid = tokens.shape[1:3]
        # timm's only way to add its (resampled) position embedding and prefix tokens: the one
        # private timm member used here; test_frozen_vit checks the result against timm's forward
        tokens = self.trunk._pos_embed(tokens)
        tokens = self.trunk.patch_drop(tokens)
        return self.trunk.norm_pre(tokens), grid

    def forward_block(self, index: int, block: nn.Module, x: torch.Tensor,
                      record: Optional[Guidance] = None) -> torch.Tensor:
        """Run block ``index`` on tokens ``x`` (B, prefix + N, D): through the prompt part when
        there is one (which adds a guided block's features to ``record``), else as is."""
        if self.prompts is None:
            return block(x)
        return self.prompts.run_block(index, block, x, self.num_prefix_tokens, record)

    def forward(self, x: torch.Tensor) -> Features:
        """x (B, C, H, W) -> one (B, D, h, w) map per ``out_indices`` (with the class token
        when ``output_cls_token``)."""
        if self.training and self.guided_blocks and not torch.compiler.is_compiling():
            self._warn_unguided()
        return self._forward(x, None)

    def forward_guided(self, x: torch.Tensor) -> Tuple[Features, Guidance]:
        """:meth:`forward` plus the guided blocks' features, for the metric loss: a dict
        {block index: tensors}, read with :meth:`metric_features`. Nothing is kept on the
        backbone."""
        record: Guidance = {}
        return self._forward(x, record), record

    def _forward(self, x: torch.Tensor, record: Optional[Guidance]) -> Features:
        B = x.shape[0]
        tokens, (h, w) = self.embed(x)
        outs = []
        last = self.depth - 1
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.trunk.blocks):
            if use_cp:
                tokens = checkpoint(self.forward_block, i, block, tokens, record,
                                    use_reentrant=False)
            else:
                tokens = self.forward_block(i, block, tokens, record)
            if i not in self.out_indices:
                continue
            out = self.trunk.norm(tokens) if (self.final_norm and i == last) else tokens
            fmap = out[:, self.num_prefix_tokens:].reshape(B, h, w, -1).permute(0, 3, 1, 2)
            fmap = fmap.contiguous()
            outs.append([fmap, out[:, 0]] if self.output_cls_token else fmap)
        return tuple(outs)

    # ------------------------------------------------------------------ metric guidance
    @property
    def guided_blocks(self) -> Tuple[int, ...]:
        """Blocks whose prompts metric guidance compares with the classes (none by default)."""
        return () if self.prompts is None else tuple(getattr(self.prompts, 'guided_blocks', ()))

    @property
    def num_guided_prompts(self) -> int:
        """M, the prompts (= clusters of classes) of every guided block."""
        counts = {self.prompts.counts[i] for i in self.guided_blocks}
        if len(counts) != 1:
            raise ValueError(f'guided blocks {self.guided_blocks} must have the same number of '
                             f'prompts (one per cluster), got {sorted(counts)}')
        return counts.pop()

    @property
    def patch_size(self) -> Tuple[int, int]:
        return tuple(self.trunk.patch_embed.patch_size)

    def metric_sides(self, token_side: Optional[str] = None,
                     prompt_side: Optional[str] = None) -> Tuple[str, str]:
        """The (token side, prompt side) the metric loss compares, defaults filled in; raises on
        a side this backbone's prompt part does not offer."""
        part = self.prompts
        if not self.guided_blocks:
            raise ValueError(f'{type(self).__name__} has no guided prompt blocks: metric guidance '
                             f'needs DAVPTViT, or a prompt part with guided_blocks=(...)')
        token_side = token_side or part.TOKEN_SIDES[0]
        prompt_side = prompt_side or part.PROMPT_SIDES[0]
        if token_side not in part.TOKEN_SIDES or prompt_side not in part.PROMPT_SIDES:
            raise ValueError(f'{type(self).__name__} ({type(part).__name__}) offers '
                             f'metric_cfg.token_side in {part.TOKEN_SIDES} and prompt_side in '
                             f'{part.PROMPT_SIDES}; got {token_side!r}, {prompt_side!r}')
        return token_side, prompt_side

    def metric_features(self, guidance: Guidance, index: int, token_side: Optional[str] = None,
                        prompt_side: Optional[str] = None
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the metric loss compares in guided block ``index`` of ``guidance`` (from
        :meth:`forward_guided`): tokens (B, N, D) at the patches, prompts (M, D) and the block's
        output class token (B, D); the sides are the prompt part's (:meth:`metric_sides`)."""
        token_side, prompt_side = self.metric_sides(token_side, prompt_side)
        return self.prompts.metric_features(guidance, self.trunk.blocks, index, token_side,
                                            prompt_side)

    def _warn_unguided(self) -> None:
        """Warn once when guided prompts train through a plain forward (no metric loss)."""
        if not self._unguided_warned:
            self._unguided_warned = True
            print_log(f'{type(self).__name__} is training without metric guidance, i.e. as '
                      f'{self.prompts.METHOD} (a plain forward, no metric loss): the guidance '
                      f'needs model.type="MetricGuidedEncoderDecoder"', logger='current',
                      level=logging.WARNING)

def _drop_frozen_trunk(module: FrozenViT, state_dict: Dict[str, torch.Tensor], prefix: str,
                       local_metadata: dict) -> None:
    """State-dict hook: leave the frozen trunk out of checkpoints (it comes from `pretrained`)."""
    if module.save_frozen_trunk:
        return
    tuned = module.tuned_trunk_names()
    trunk_prefix = prefix + 'trunk.'
    for key in [k for k in state_dict if k.startswith(trunk_prefix)]:
        if key[len(trunk_prefix):] not in tuned:
            del state_dict[key]


def _add_provenance(module: FrozenViT, state_dict: Dict[str, torch.Tensor], prefix: str,
                    local_metadata: dict) -> None:
    """State-dict hook: add the provenance record (trunk sha256, type, layout) as a uint8
    tensor under ``<prefix>provenance``."""
    if module._with_provenance:
        state_dict[prefix + PROVENANCE_KEY] = provenance.encode(module.provenance())


def _check_tensors(state_dict: Dict[str, torch.Tensor], prefix: str,
                   expected: Dict[str, torch.Tensor], what: str, likely: str,
                   extra_ok: Tuple[str, ...] = ()) -> None:
    """Raise if ``state_dict`` lacks, adds or reshapes any of ``expected`` under ``prefix``."""
    diff = diff_state_dict(state_dict, expected, prefix,
                           ignore_extra=lambda name: name.startswith(extra_ok))
    if diff.in_model_order:
        m = diff.in_model_order[0]
        if m.kind == 'missing':
            raise TrunkWeightsError(
                f'the checkpoint has no `{m.key}` ({m.model}), which {what} need: it looks like '
                f'{likely}')
        raise TrunkWeightsError(
            f'`{m.key}` has shape {m.saved} in the checkpoint but {m.model} in the model: it '
            f'looks like {likely}')
    if diff.extra:
        raise TrunkWeightsError(
            f'the checkpoint has `{diff.extra[0].key}`, which this model does not have '
            f'({len(diff.extra)} such keys): it looks like {likely}')


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
