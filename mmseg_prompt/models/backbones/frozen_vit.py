"""A frozen timm ViT trunk as an mmseg backbone: the shared base of every prompt method.

The trunk is any timm ViT with a patch embedding and a stack of blocks (ViT-B/L/H, DeiT). It is
frozen: no parameter has ``requires_grad`` and the trunk stays in eval mode while the segmentor
trains (unless ``trunk_train_mode=True``). Prompt methods subclass :class:`FrozenViT` and override
:meth:`FrozenViT.forward_block`, the one place where a block runs, so that each method's file shows
only what it adds.
"""
import logging
from contextlib import contextmanager
from typing import List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from . import provenance
from .provenance import PROVENANCE_KEY, tensors_sha256
from .trunk_weights import TrunkWeightsError, load_trunk_weights

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
        patch = self.trunk.patch_embed.patch_size
        sizes = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if any(s % p for s, p in zip(sizes, patch)):
            raise ValueError(f'img_size={img_size} does not fit the patch size {tuple(patch)} of '
                             f'{model_name}: use a multiple of it (model.backbone.img_size)')
        depth = len(self.trunk.blocks)
        self.out_indices = _normalise_indices(out_indices, depth)
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
        if pretrained is not None:
            load_trunk_weights(self.trunk, pretrained, model_name)
            self._trunk_loaded(str(pretrained))
        self.trunk.requires_grad_(False)
        self._register_state_dict_hook(_drop_frozen_trunk)
        self.register_state_dict_post_hook(_add_provenance)

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
            self._trunk_loaded(str(cfg['checkpoint']))
        self._is_init = True

    def _trunk_loaded(self, source: str):
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
        beyond their shapes (which features the neck gets; prompt methods add theirs)."""
        return dict(out_indices=list(self.out_indices), final_norm=self.final_norm)

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

    @contextmanager
    def prompts_disabled(self):
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
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.trunk.blocks):
            if use_cp:
                tokens = checkpoint(self.forward_block, i, block, tokens, use_reentrant=False)
            else:
                tokens = self.forward_block(i, block, tokens)
            if i not in self.out_indices:
                continue
            out = self.trunk.norm(tokens) if (self.final_norm and i == last) else tokens
            fmap = out[:, self.num_prefix_tokens:].reshape(B, h, w, -1).permute(0, 3, 1, 2)
            fmap = fmap.contiguous()
            outs.append([fmap, out[:, 0]] if self.output_cls_token else fmap)
        return tuple(outs)


def _drop_frozen_trunk(module: FrozenViT, state_dict, prefix, local_metadata):
    """State-dict hook: leave the frozen trunk out of checkpoints (it comes from `pretrained`)."""
    if module.save_frozen_trunk:
        return state_dict
    tuned = module.tuned_trunk_names()
    trunk_prefix = prefix + 'trunk.'
    for key in [k for k in state_dict if k.startswith(trunk_prefix)]:
        if key[len(trunk_prefix):] not in tuned:
            del state_dict[key]
    return state_dict


def _add_provenance(module: FrozenViT, state_dict, prefix, local_metadata) -> None:
    """State-dict hook: add the provenance record (trunk sha256, type, layout) as a uint8
    tensor under ``<prefix>provenance``."""
    if module._with_provenance:
        state_dict[prefix + PROVENANCE_KEY] = provenance.encode(module.provenance())


def _check_tensors(state_dict, prefix, expected, what, likely, extra_ok=()):
    """Raise if ``state_dict`` lacks, adds or reshapes any of ``expected`` under ``prefix``."""
    for name, tensor in expected.items():
        got = state_dict.get(prefix + name)
        if got is None:
            raise TrunkWeightsError(
                f'the checkpoint has no `{prefix}{name}` ({tuple(tensor.shape)}), which '
                f'{what} need: it looks like {likely}')
        if tuple(got.shape) != tuple(tensor.shape):
            raise TrunkWeightsError(
                f'`{prefix}{name}` has shape {tuple(got.shape)} in the checkpoint but '
                f'{tuple(tensor.shape)} in the model: it looks like {likely}')
    extra = [k for k in state_dict if k.startswith(prefix) and k[len(prefix):] not in expected
             and not k[len(prefix):].startswith(extra_ok)]
    if extra:
        raise TrunkWeightsError(
            f'the checkpoint has `{extra[0]}`, which this model does not have '
            f'({len(extra)} such keys): it looks like {likely}')


def _normalise_indices(indices, depth):
    if isinstance(indices, int):
        indices = [indices]
    out = []
    for i in indices:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ValueError(f'out_indices has {i}, but the trunk has {depth} blocks '
                             f'(valid: 0..{depth - 1} or negative from the end)')
        if j in out:
            raise ValueError(f'out_indices has block {j} twice ({tuple(indices)}); each block '
                             f'gives one output')
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
