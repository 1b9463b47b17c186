"""A frozen timm ViT trunk as an mmseg backbone: the shared base of every tuning method.

The trunk is a timm ViT of either family (``trunk_families.py``): ``VisionTransformer`` (ViT-B/L/H,
DeiT, DINOv2) or ``Eva`` with RoPE (DINOv3, EVA-02); its weights are read from the files users
download (``trunk_weights.py``). It is frozen: no parameter has ``requires_grad`` and the trunk
stays in eval mode while the segmentor trains (unless ``trunk_train_mode=True``). The tuning
methods are parts over this one base (``tuning_part.py``, docs/methods.md, "Tuning parts"),
built from sub-configs and combined by configuration:

- ``parts=[dict(type='LoRA', rank=8), dict(type='AdaptFormer'), ...]``: any registered parts;
- ``prompts=dict(type='SequencePrompts', ...)`` (VPT-Deep, DA-VPT's guided prompts) or
  ``dict(type='CrossAttentionPrompts', ...)`` (CVPT): the prompt part, under its own key;
- ``bias_tuning=True`` (DA-VPT+): the ``KVBiasDeltas`` part.

The registered ``VPTDeepViT``, ``CVPTViT`` and ``DAVPTViT`` are such combinations under the
names (and options) their configs and checkpoints use. The checkpoint policy is in
``tuned_checkpoint.py``, the metric-guidance API in ``guidance_api.py``.
"""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.utils.checkpoint import checkpoint

from . import provenance, tuned_checkpoint
from .block_indices import normalise_indices
from .block_steps import run_block_steps
from .guidance_api import Features, Guidance, MetricGuidanceAPI
from .kv_bias_deltas import KVBiasDeltas
from .provenance import tensors_sha256
from .trunk_families import Embedded, create_trunk, rope_with_prompts
from .trunk_storage import check_trunk_dtype, store_matmul_weights, stored_dtype
from .trunk_weights import load_trunk_weights
from .tuning_part import GuidedPromptsContract, TuningPart

# The paper's trunk (docs/methods.md): ViT-L/16, ImageNet-21k, the 'orig_in21k_ft_in1k' weights.
DEFAULT_MODEL = 'vit_large_patch16_384'


@MODELS.register_module()
class FrozenViT(MetricGuidanceAPI, BaseModule):
    """Frozen timm ViT returning multi-level NCHW feature maps, like mmseg's ``VisionTransformer``.

    Args:
        model_name: timm model name of the trunk: a ``VisionTransformer`` (ViT, DeiT, DINOv2)
            or an ``Eva`` (DINOv3, EVA-02) model (``trunk_families.py``).
        img_size: the training input size; a position table is resampled to its grid at load
            time and to each input's grid at run time (a RoPE trunk has none: its rotations are
            made for each input's grid).
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
            flow through them to the tuned parts). Saves memory, costs one more forward.
        allow_other_trunk: load a tuned-only checkpoint trained with another frozen trunk than
            this one (another file of the same architecture) with a warning instead of an error.
        prompts: the prompt part's sub-config (``type`` 'SequencePrompts' or
            'CrossAttentionPrompts' and its options); None: no prompts.
        bias_tuning: add the ``KVBiasDeltas`` part: a trained (depth, 2, D) delta on every
            block's key and value bias (DA-VPT+).
        parts: sub-configs of more tuning parts (``tuning_part.py``), e.g.
            ``[dict(type='LoRA', rank=8)]``. No part at all: linear probing.
        trunk_dtype: 'float32' or 'bfloat16': the dtype the trunk's Linear and Conv weights
            are stored in (``trunk_storage.py``). A bfloat16 trunk takes half the memory and is
            never cast per step; its forward runs under bfloat16 autocast (entered when the
            caller has not), where it equals the float32 trunk bit for bit.

    Each part is an attribute named by its ``NAME`` (``backbone.prompts``, ``backbone.lora``, ...).
    Checkpoints: ``state_dict()`` leaves the frozen trunk out and adds ``provenance``, a record
    of the trunk's sha256, :meth:`weights_layout` and each part's type and options
    (:meth:`parts_record`; ``tuned_checkpoint.py``).

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
                 parts: Sequence[dict] = (),
                 trunk_dtype: str = 'float32',
                 init_cfg: Optional[dict] = None):
        _check_init_cfg(init_cfg, pretrained)
        super().__init__(init_cfg=init_cfg)
        self.model_name = model_name
        self.trunk_dtype = check_trunk_dtype(trunk_dtype)
        self.trunk, self.family = create_trunk(model_name, img_size, model_kwargs)
        patch = self.trunk.patch_embed.patch_size
        sizes = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if any(s % p for s, p in zip(sizes, patch)):
            raise ValueError(f'img_size={img_size} does not fit the patch size {tuple(patch)} of '
                             f'{model_name}: use a multiple of it (model.backbone.img_size)')
        self.out_indices = normalise_indices(out_indices, self.depth)
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
        if pretrained is not None:
            load_trunk_weights(self.trunk, pretrained, model_name)
            self._trunk_loaded(str(pretrained))
        self._store_trunk()
        self.trunk.requires_grad_(False)
        cfgs = ([prompts] if prompts is not None else []) \
            + ([dict(type='KVBiasDeltas')] if bias_tuning else []) + list(parts)
        self.part_names: Tuple[str, ...] = tuple(self._add_part(cfg).NAME for cfg in cfgs)
        if 'prompts' not in self.part_names:
            self.prompts = None
        self._check_composition()
        # the parts' roles, found once (the forward asks for them in every block)
        self._sequence_name = next((p.NAME for p in self.parts if p.CHANGES_SEQUENCE), None)
        self._guided_name = next((p.NAME for p in self._guided_parts()), None)
        tuned_checkpoint.register_state_dict_hooks(self)

    def _add_part(self, cfg: dict) -> TuningPart:
        """Build the part of sub-config ``cfg`` with the trunk facts it declares, check it
        against the trunk, and register it under its NAME."""
        cls = MODELS.get(cfg['type']) if isinstance(cfg['type'], str) else cfg['type']
        if not (isinstance(cls, type) and issubclass(cls, TuningPart)):
            raise TypeError(f'{cfg["type"]!r} is not a registered tuning part (a TuningPart '
                            f'subclass, tuning_part.py); check model.backbone.parts / prompts')
        patch_embed = self.trunk.patch_embed
        facts = dict(embed_dim=self.embed_dim, depth=self.depth,
                     patch_size=tuple(patch_embed.patch_size),
                     in_chans=patch_embed.proj.in_channels,
                     final_norm=self.runs_final_norm)
        given = sorted(set(cfg) & set(cls.TRUNK_ARGS))
        if given:
            raise ValueError(f'{cls.__name__} takes {given} from the trunk (its TRUNK_ARGS); '
                             f'remove them from its entry of model.backbone.parts / prompts')
        part = MODELS.build(cfg, default_args={k: facts[k] for k in cls.TRUNK_ARGS})
        if isinstance(self._modules.get(part.NAME), TuningPart):
            raise ValueError(f'two tuning parts are named {part.NAME!r} ({type(part).__name__} '
                             f'and {type(self._modules[part.NAME]).__name__}): one trunk takes '
                             f'each kind of part once (model.backbone.parts)')
        if not part.NAME.isidentifier() or hasattr(self, part.NAME) \
                or part.NAME == provenance.PROVENANCE_KEY:
            raise ValueError(f'{type(part).__name__}.NAME = {part.NAME!r}: a part\'s NAME is its '
                             f'attribute on the backbone and its state-dict prefix, so it must '
                             f'be an identifier that FrozenViT does not already use')
        part.attach(self.trunk, self.model_name)
        self.add_module(part.NAME, part)
        return part

    def _check_composition(self) -> None:
        """At most one part changes the token sequence, and at most one has guided blocks."""
        sequence = [type(p).__name__ for p in self.parts if p.CHANGES_SEQUENCE]
        guided = [type(p).__name__ for p in self._guided_parts()]
        for what, found in (('changes the token sequence', sequence),
                            ('has metric-guided blocks', guided)):
            if len(found) > 1:
                raise ValueError(f'{", ".join(found)}: only one part per trunk {what}')

    def _guided_parts(self) -> List[GuidedPromptsContract]:
        """The parts with metric-guided blocks."""
        return [p for p in self.parts
                if isinstance(p, GuidedPromptsContract) and p.guided_blocks]

    @property
    def parts(self) -> List[TuningPart]:
        """The tuning parts, in the order they were configured."""
        return [self._modules[n] for n in self.part_names]

    @property
    def sequence_part(self) -> Optional[TuningPart]:
        """The part that changes the token sequence, or None."""
        return None if self._sequence_name is None else self._modules[self._sequence_name]

    @property
    def guided_part(self) -> Optional[GuidedPromptsContract]:
        """The part with metric-guided blocks, or None."""
        return None if self._guided_name is None else self._modules[self._guided_name]

    @property
    def bias_tuning(self) -> bool:
        """Whether the K/V bias deltas are a part (``bias_tuning=True``)."""
        return any(isinstance(p, KVBiasDeltas) for p in self.parts)

    @property
    def runs_final_norm(self) -> bool:
        """Whether the forward applies the trunk's final norm (``final_norm`` and the last
        block among ``out_indices``)."""
        return self.final_norm and self.depth - 1 in self.out_indices

    @property
    def depth(self) -> int:
        return len(self.trunk.blocks)

    @property
    def patch_size(self) -> Tuple[int, int]:
        return tuple(self.trunk.patch_embed.patch_size)

    def no_decay_parameters(self) -> Set[str]:
        """Names (relative to the backbone) of the tuned tensors that take no weight decay."""
        return {f'{p.NAME}.{n}' for p in self.parts for n in p.no_decay_parameters()}

    # ------------------------------------------------------------------ weights and modes
    def init_weights(self) -> None:
        """Load ``init_cfg`` Pretrained weights into the trunk through timm's filter.

        The trunk's own timm ``init_weights`` would re-randomise it, so it is never called.
        """
        cfg = self.init_cfg
        if cfg is not None and not self._is_init:
            store_matmul_weights(self.trunk, torch.float32)  # the file's values, uncut
            load_trunk_weights(self.trunk, cfg['checkpoint'], self.model_name,
                               prefix=cfg.get('prefix', '') or '')
            self._trunk_loaded(str(cfg['checkpoint']))
            self._store_trunk()
        self._is_init = True

    def _trunk_loaded(self, source: str, sha256: Optional[str] = None) -> None:
        """Record where the trunk now comes from and its fingerprint (None: computed again
        when needed)."""
        self.trunk_source = source
        self._trunk_sha256 = sha256

    def _store_trunk(self) -> None:
        """Store the trunk's matmul weights in ``trunk_dtype``; a loaded trunk is fingerprinted
        first, from the values it is cast from (``trunk_storage.py``)."""
        if stored_dtype(self.trunk) == self.trunk_dtype:
            return
        if self.trunk_source is not None:
            self.trunk_sha256()
        store_matmul_weights(self.trunk, self.trunk_dtype)

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
    def tuning_disabled(self) -> Iterator[None]:
        """Run as the plain frozen trunk: every part switched off (``TuningPart.enabled``)."""
        parts = self.parts
        for p in parts:
            p.enabled = False
        try:
            yield
        finally:
            for p in parts:
                p.enabled = True

    # ------------------------------------------------------------------ provenance
    def frozen_trunk_tensors(self) -> List[Tuple[str, torch.Tensor]]:
        """(name, tensor) of every frozen trunk tensor, in state-dict order."""
        return list(self.trunk.state_dict().items())

    def trunk_sha256(self) -> str:
        """sha256 of the frozen trunk (names, shapes, dtypes, bytes), computed once per trunk
        load (a ViT-L trunk takes seconds) and cached."""
        if self._trunk_sha256 is None:
            self._trunk_sha256 = tensors_sha256(self.frozen_trunk_tensors())
        return self._trunk_sha256

    def stored_trunk_sha256(self) -> str:
        """sha256 of the trunk's tensors as they are stored now: the (cached) fingerprint of a
        float32 trunk; for a bfloat16 one, of its bfloat16 values (computed)."""
        if stored_dtype(self.trunk) == torch.float32:
            return self.trunk_sha256()
        return tensors_sha256(self.frozen_trunk_tensors())

    def weights_layout(self) -> dict:
        """The backbone's own options, by ``model.backbone`` key, that give the tuned weights
        their meaning beyond their shapes: which features the neck gets."""
        return dict(out_indices=list(self.out_indices), final_norm=self.final_norm)

    def parts_record(self) -> dict:
        """Each tuning part under its ``NAME``: its type and its options
        (``TuningPart.weights_layout``). Order-free, so every spelling of one combination
        (``CVPTViT(...)``, ``FrozenViT(prompts=...)``, parts in any order) records the same."""
        return {p.NAME: dict(type=type(p).__name__, layout=p.weights_layout())
                for p in self.parts}

    def provenance(self, with_trunk: bool = True) -> dict:
        """The record a checkpoint carries (see ``provenance.py``); ``with_trunk=False``
        leaves the trunk's fingerprint out (not computed)."""
        trunk = dict(sha256=self.trunk_sha256(), source=self.trunk_source) if with_trunk \
            else None
        return dict(format=provenance.FORMAT, backbone=type(self).__name__,
                    model_name=self.model_name, img_size=list(self.img_size), trunk=trunk,
                    layout=self.weights_layout(), parts=self.parts_record())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Load a tuned-only checkpoint (the trunk is kept from the pretrained file) or a full
        one, checked as ``tuned_checkpoint.load_backbone_state`` says."""
        tuned_only = tuned_checkpoint.load_backbone_state(self, state_dict, prefix)
        sha256 = None
        if not tuned_only and stored_dtype(self.trunk) != torch.float32:
            # fingerprinted as saved: the copy into the trunk casts the values
            sha256 = tensors_sha256((k, state_dict[f'{prefix}trunk.{k}'])
                                    for k in self.trunk.state_dict())
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if not tuned_only:  # the trunk now is the checkpoint's
            self._trunk_loaded('a full checkpoint', sha256)

    # ------------------------------------------------------------------ forward
    def embed(self, x: torch.Tensor) -> Embedded:
        """Patch-embed, pad, add the prefix tokens and the position table resampled to the
        input's grid (the family's way): tokens (B, prefix + h*w, D), grid (h, w) and the
        patches' RoPE (None for a ViT)."""
        return self.family.embed(self.trunk, x)

    def forward_block(self, index: int, block: nn.Module, x: torch.Tensor,
                      record: Optional[Guidance] = None, present: int = 0,
                      rope: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, int]:
        """Run block ``index`` on tokens ``x`` (B, prefix + present + N, D), ``present`` the
        sequence part's tokens of the previous block after the prefix, ``rope`` the patches'
        RoPE (Eva): the sequence part puts this block's in their place, then timm's own forward
        runs, or the block step by step when a part adds a branch or a guided block records its
        features (into ``record``, when given). Returns the output and how many sequence-part
        tokens it holds."""
        n = self.num_prefix_tokens
        sequence = self.sequence_part
        if sequence is not None and sequence.enabled:
            x, present = sequence.insert(index, x, n, present)
        rope = rope_with_prompts(rope, present)  # the sequence part's tokens are not rotated
        parts = [p for p in self.parts if p.enabled]  # a disabled part adds nothing
        after = [f for f in (p.after_attention(index, block) for p in parts) if f is not None]
        beside = [f for f in (p.beside_mlp(index, block) for p in parts) if f is not None]
        guide = self.guided_part
        guided = record is not None and guide is not None and index in guide.guided_blocks
        if after or beside or guided:
            x, steps = run_block_steps(block, x, after, beside, self.family, rope)
            if guided:
                record[index] = guide.guidance(index, steps, n + present)
        else:
            x = self.family.run_block(block, x, rope)
        return x, present

    def forward(self, x: torch.Tensor) -> Features:
        """x (B, C, H, W) -> one (B, D, h, w) map per ``out_indices`` (with the class token
        when ``output_cls_token``)."""
        if self.training and self.guided_blocks and not torch.compiler.is_compiling():
            self.warn_unguided()
        return self.forward_recorded(x, None)

    def forward_recorded(self, x: torch.Tensor, record: Optional[Guidance]) -> Features:
        """``forward`` without the unguided-training warning, recording each guided block's
        features into ``record`` when given (``forward_guided`` gives one)."""
        device = x.device.type
        if self.trunk_dtype != torch.float32 and not torch.is_autocast_enabled(device):
            with torch.autocast(device, dtype=self.trunk_dtype):
                return self._forward_blocks(x, record)
        return self._forward_blocks(x, record)

    def _forward_blocks(self, x: torch.Tensor, record: Optional[Guidance]) -> Features:
        B = x.shape[0]
        tokens, (h, w), rope = self.embed(x)
        for part in self.parts:
            if part.enabled:
                part.begin_forward(tokens)
        outs = []
        last = self.depth - 1
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        present = 0  # the sequence part's tokens after the prefix
        for i, block in enumerate(self.trunk.blocks):
            if use_cp:
                tokens, present = checkpoint(self.forward_block, i, block, tokens, record,
                                             present, rope, use_reentrant=False)
            else:
                tokens, present = self.forward_block(i, block, tokens, record, present, rope)
            if i not in self.out_indices:
                continue
            out = self.trunk.norm(tokens) if (self.final_norm and i == last) else tokens
            fmap = out[:, self.num_prefix_tokens + present:].reshape(B, h, w, -1)
            fmap = fmap.permute(0, 3, 1, 2).contiguous()
            outs.append([fmap, out[:, 0]] if self.output_cls_token else fmap)
        return tuple(outs)


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
