"""The benchmark's cases: backbone configs over :class:`FrozenViT`, read from a case file and built
from mmseg's ``MODELS`` registry (docs/cost.md, "Cases").

A case file is an mmengine config holding ``cases``, a list of dicts, and optionally
``baseline`` and ``custom_imports`` (modules registering more parts, imported on load):

- ``method``: the case's key: ``results.json``'s ``method``, what ``--methods`` selects;
- ``name``: its name in the tables and the plot;
- ``backbone``: the ``model.backbone`` options that make it, over ``FrozenViT`` (the parts as
  sub-configs: ``prompts=dict(type=...)``, ``parts=[dict(type=...)]``; ``{}`` is the bare
  frozen trunk); ``type`` may name a registered ``FrozenViT`` subclass instead;
- ``sweep`` (optional): the dotted key of ``backbone`` each ``--prompts`` value goes into
  (``'prompts.num_prompts'``, ``'parts.0.rank'``): one case per value; without it, one case;
- ``flags`` (optional): tool flag -> dotted key of ``backbone`` its value goes into, for the
  tool's part flags (``--prompt-dropout``, ``--cross-proj-drop``, ``--fold``);
- ``reference`` (optional): the ``method`` of the case its training step is compared with at the
  same prompt count (the table's last column, the ratios, the linear fit);
- ``default`` (optional, True): run when ``--methods`` is not given.

``baseline``: the ``method`` of the case every ratio "x the <name>'s forward + backward" and the
operator table's "extra per block" are against.

What the benchmark needs to know of a case it asks the built backbone (``FrozenViT.parts`` and
the parts' attributes): whether it is the bare trunk, and the cross-attention form it runs.
"""
import copy
import os.path as osp
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

CASE_KEYS = ('method', 'name', 'backbone', 'sweep', 'flags', 'reference', 'default')


class CaseSpec(NamedTuple):
    """One entry of a case file (the module docstring says what each field is)."""
    method: str
    name: str
    backbone: dict
    sweep: Optional[str] = None
    flags: Dict[str, str] = {}
    reference: Optional[str] = None
    default: bool = True


class CaseFile(NamedTuple):
    """A read case file: its path, its cases in file order and its baseline's ``method``."""
    path: str
    specs: List[CaseSpec]
    baseline: Optional[str]

    def spec(self, method: str) -> CaseSpec:
        for s in self.specs:
            if s.method == method:
                return s
        raise KeyError(f'no case {method!r} in {self.path} (there: '
                       f'{", ".join(s.method for s in self.specs)}); pick one of those or add it '
                       f'to the file\'s `cases`')

    def name(self, method: str) -> str:
        """The display name of ``method``; the key itself for a case the file does not hold (a
        saved run reported with another case file)."""
        return next((s.name for s in self.specs if s.method == method), method)

    def select(self, methods: Optional[Sequence[str]]) -> List[CaseSpec]:
        """The cases named in ``methods`` (None: the default ones), in file order."""
        if methods is None:
            return [s for s in self.specs if s.default]
        for m in methods:
            self.spec(m)  # an unknown name raises, naming the file and its cases
        return [s for s in self.specs if s.method in methods]


class Case(NamedTuple):
    """A case to run: its spec and its prompt count (the swept value; 0 without a sweep)."""
    spec: CaseSpec
    prompts: int


def load_cases(path: str, flags: Sequence[str] = ()) -> CaseFile:
    """Read and check the case file at ``path``; ``flags``: the tool flags a case may route."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise FileNotFoundError(f'case file {path} not found (--cases)')
    cfg = Config.fromfile(path)  # imports its custom_imports
    if not isinstance(cfg.get('cases'), (list, tuple)) or not cfg.cases:
        raise ValueError(f'{path} holds no `cases` list: give it `cases = [dict(method=..., '
                         f'name=..., backbone=dict(...)), ...]` (docs/cost.md, "Cases")')
    specs = []
    for i, entry in enumerate(cfg.cases):
        where = f'{path}, cases[{i}]'
        entry = entry.to_dict() if hasattr(entry, 'to_dict') else dict(entry)
        unknown = set(entry) - set(CASE_KEYS)
        if unknown:
            raise ValueError(f'{where}: unknown keys {sorted(unknown)}; a case takes '
                             f'{", ".join(CASE_KEYS)}')
        for key in ('method', 'name'):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ValueError(f'{where}: `{key}` must be a non-empty string')
        if not isinstance(entry.get('backbone'), dict):
            raise ValueError(f'{where} ({entry["method"]}): `backbone` must be a dict of '
                             f'model.backbone options ({{}} for the bare frozen trunk)')
        for flag in entry.get('flags', {}):
            if flag not in flags:
                raise ValueError(f'{where} ({entry["method"]}): flags: {flag!r} is not one of '
                                 f'the tool\'s part flags ({", ".join(flags)})')
        specs.append(CaseSpec(**entry))
    methods = [s.method for s in specs]
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise ValueError(f'{path}: two cases have the method {twice}: give each its own')
    baseline = cfg.get('baseline')
    for what, ref in [('baseline', baseline)] + [(f'cases[{methods.index(s.method)}].reference',
                                                  s.reference) for s in specs]:
        if ref is not None and ref not in methods:
            raise ValueError(f'{path}: {what} = {ref!r} is not a case of the file '
                             f'({", ".join(methods)})')
    return CaseFile(path, specs, baseline)


def expand(specs: Sequence[CaseSpec], prompts: Sequence[int]) -> List[Case]:
    """Each spec once, or, with a ``sweep``, once per prompt count, in file order."""
    return [Case(s, m) for s in specs for m in (prompts if s.sweep else [0])]


def set_key(cfg: dict, dotted: str, value, where: str) -> None:
    """``cfg[a][b]... = value`` for ``dotted`` 'a.b...' (an integer part indexes a list); the
    containers on the way must exist."""
    *path, last = dotted.split('.')
    node = cfg
    for key in path:
        try:
            node = node[int(key)] if isinstance(node, list) else node[key]
        except (KeyError, IndexError, ValueError):
            raise ValueError(f'{where}: {dotted!r} does not name an option of the case\'s '
                             f'backbone ({key!r} is not there): add it to `backbone` or fix the '
                             f'key') from None
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def model_kwargs(items: Sequence[str]) -> dict:
    """``--model-kwargs key=int ...`` as a dict."""
    out = {}
    for item in items:
        key, _, value = item.partition('=')
        out[key] = int(value)
    return out


def trunk_shape(args) -> Tuple[int, int]:
    """(depth, width) of the timm trunk ``--model`` with ``--model-kwargs``, read from a copy
    built on the meta device (shapes only: no weights initialised)."""
    import timm
    with torch.device('meta'):
        probe = timm.create_model(args.model, pretrained=False,
                                  **model_kwargs(args.model_kwargs))
    return len(probe.blocks), probe.embed_dim


def backbone_config(case: Case, args, path: str = '', depth: Optional[int] = None) -> dict:
    """The ``model.backbone`` config of ``case``: the trunk ``args`` gives (``--model``,
    ``--img``, ``--model-kwargs``, ``--with-cp``, ``--trunk-dtype``, features of the blocks at
    1/4, 2/4, 3/4 and 4/4 of the depth, each once), the case's options over it, the case's
    flags' values from ``args`` and the swept prompt count. ``depth``: the trunk's, when known."""
    depth = depth or trunk_shape(args)[0]
    out_indices = tuple(sorted({max(depth * k // 4 - 1, 0) for k in (1, 2, 3, 4)}))
    spec = case.spec
    cfg = dict(type='FrozenViT', model_name=args.model, img_size=args.img,
               out_indices=out_indices, with_cp=args.with_cp,
               model_kwargs=model_kwargs(args.model_kwargs), trunk_dtype=args.trunk_dtype)
    cfg.update(copy.deepcopy(spec.backbone))
    where = f'{path or "case file"}, case {spec.method!r}'
    for flag, key in spec.flags.items():
        set_key(cfg, key, getattr(args, flag), f'{where}, flags[{flag!r}]')
    if spec.sweep:
        set_key(cfg, spec.sweep, case.prompts, f'{where}, sweep')
    return cfg


def build(case: Case, args, path: str = '') -> nn.Module:
    """The case's backbone alone (``--head none``), or the configs' UperNet segmentor over it at
    the trunk's width (``--head upernet``; BN in place of SyncBN: one process)."""
    from mmengine.config import Config
    from mmseg.registry import MODELS

    from mmseg_prompt.models.backbones.frozen_vit import FrozenViT
    depth, width = trunk_shape(args)
    backbone = backbone_config(case, args, path, depth)
    if args.head == 'none':
        model = MODELS.build(backbone)
    else:
        if len(backbone['out_indices']) < 4:
            raise ValueError(f'--head upernet takes the features of 4 blocks; {args.model} with '
                             f'--model-kwargs {args.model_kwargs} has {depth}: give it depth >= 4')
        repo = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
        seg = Config.fromfile(osp.join(repo, 'configs/_base_/models/upernet_vitl_prompt.py'))
        seg = seg.model
        norm = dict(type='BN', requires_grad=True)  # one process: SyncBN has nothing to sync
        seg.backbone = backbone
        seg.data_preprocessor = None
        seg.neck.update(embed_dim=width, norm_cfg=norm)
        seg.decode_head.update(in_channels=[width] * 4, norm_cfg=norm)
        seg.auxiliary_head.update(in_channels=width, norm_cfg=norm)
        model = MODELS.build(seg)
    if not isinstance(backbone_of(model, args.head), FrozenViT):
        raise TypeError(f'case {case.spec.method!r} ({path}): its backbone is a '
                        f'{type(backbone_of(model, args.head)).__name__}, not a FrozenViT: leave '
                        f'`type` out of the case\'s `backbone` or name a FrozenViT subclass')
    return model


def backbone_of(model: nn.Module, head: str) -> nn.Module:
    """The backbone of a built case: the model itself, or the segmentor's (``--head upernet``)."""
    return model if head == 'none' else model.backbone


def is_bare_trunk(backbone: nn.Module) -> bool:
    """True for the frozen trunk without any tuning part."""
    return not backbone.parts


def _cross_attention(backbone: nn.Module) -> Optional[Tuple[nn.Module, nn.Module, int]]:
    """(part, its ``PromptCrossAttention``, first prompted block) of the part whose prompts the
    tokens read through cross-attention (CVPT), or None."""
    from mmseg_prompt.models.backbones.cross_attention_prompts import PromptCrossAttention
    for part in backbone.parts:
        cross = getattr(part, 'cross_attn', None)
        if isinstance(cross, PromptCrossAttention):
            first = next((i for i, m in enumerate(part.counts) if m > 0), None)
            if first is not None:
                return part, cross, first
    return None


def cross_attention_form(backbone: nn.Module, device_type: str) -> Optional[str]:
    """'folded' or 'plain': the cross-attention form the backbone's cross-attention part runs
    on a ``device_type`` device at its first prompted block's count (``fold`` and
    ``PromptCrossAttention.use_fold``); None without such a part."""
    found = _cross_attention(backbone)
    if found is None:
        return None
    part, cross, first = found
    attn = backbone.trunk.blocks[first].attn
    folded = cross.use_fold(attn, part.counts[first], backbone.embed_dim, device_type)
    return 'folded' if folded else 'plain'


def pin_cross_attention_form(backbone: nn.Module, form: Optional[str]) -> None:
    """Make the cross-attention run ``form`` on any device (``fold`` 'always' or 'never')."""
    found = _cross_attention(backbone)
    if found is not None and form is not None:
        found[1].fold = 'always' if form == 'folded' else 'never'
