"""An optimizer-wrapper constructor that hands the optimizer only what trains."""
from collections import OrderedDict
from typing import List, Optional, Set

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

from ..models.backbones.tuning_part import TuningPart


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PromptOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, minus every frozen parameter, plus prompt weight decay.

    ``paramwise_cfg`` takes mmengine's options (``custom_keys``, ``norm_decay_mult``, ...) and:

    - ``prompt_decay_mult`` (default 0.0): weight-decay multiplier of the tensors that the
      tuning parts declare as taking no weight decay (``TuningPart.no_decay_parameters``: the
      prompt tokens); they get none unless configured. A ``custom_keys`` entry that matches
      such a tensor's name wins.

    Frozen modules are skipped whole (no optimizer state, no per-parameter warnings), and what
    the optimizer gets is logged once: the tuning parts' parameters (prompts, deltas, adapters:
    what the papers count as the method's) and the neck's and heads' separately, by module.

    The parameter groups are plain dicts, as after ``Optimizer.load_state_dict`` (mmengine's
    constructor leaves ``ConfigDict`` groups, which ``torch.compile`` cannot trace through an
    optimizer step: ``compile=True`` in the config, ``tools/train.py --compile``).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.prompt_decay_mult = paramwise_cfg.pop('prompt_decay_mult', 0.0)
        # a non-empty paramwise_cfg makes the parent build one group per parameter
        paramwise_cfg['custom_keys'] = dict(paramwise_cfg.get('custom_keys', {}))
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   **kwargs) -> None:
        if not any(p.requires_grad for p in module.parameters()):
            return  # a wholly frozen module: nothing to tune
        super().add_params(params, module, prefix=prefix, **kwargs)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        wrapper = super().__call__(model)
        groups = wrapper.optimizer.param_groups
        groups[:] = [dict(g) for g in groups]
        model = getattr(model, 'module', model)
        no_decay = self._apply_no_decay(model, groups)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            raise ValueError('the model has no trainable parameters: nothing to optimise')
        in_optimizer = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
        missing = [n for n, p in trainable if id(p) not in in_optimizer]
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        leaked = [n for n, p in model.named_parameters()
                  if not p.requires_grad and id(p) in in_optimizer]
        if missing or leaked:
            raise RuntimeError(f'optimizer parameter groups are wrong: trainable but left out '
                               f'{missing[:3]}, frozen but included {leaked[:3]}')
        groups = OrderedDict()
        for name, p in trainable:
            key = '.'.join(name.split('.')[:2]) if name.startswith('backbone.') \
                else name.split('.')[0]
            groups[key] = groups.get(key, 0) + p.numel()
        decay = {id(p): g.get('weight_decay', 0) for g in wrapper.optimizer.param_groups
                 for p in g['params']}
        prompt_wd = sorted({decay[id(p)] for n, p in trainable if n in no_decay})
        parts = {k: v for k, v in groups.items() if k.startswith('backbone.')}
        heads = {k: v for k, v in groups.items() if not k.startswith('backbone.')}
        print_log(f'optimizer: {len(trainable)} trainable tensors ({sum(groups.values()):,} '
                  f'params): tuning parts {_listing(parts)}; neck and heads {_listing(heads)}; '
                  f'{len(frozen)} frozen tensors left out'
                  + (f'; prompt weight decay {prompt_wd}' if prompt_wd else ''),
                  logger='current')
        return wrapper

    def _apply_no_decay(self, model: nn.Module, groups: List[dict]) -> Set[str]:
        """Set the weight decay of the tensors the tuning parts declare as taking none to
        ``base_wd * prompt_decay_mult`` (unless a ``custom_keys`` entry matches them); returns
        their full names."""
        no_decay = {f'{prefix}.{name}' if prefix else name
                    for prefix, m in model.named_modules() if isinstance(m, TuningPart)
                    for name in m.no_decay_parameters()}
        if self.base_wd is None:
            return no_decay
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        params = dict(model.named_parameters())
        targets = {id(params[n]) for n in no_decay
                   if not any(key in n for key in custom_keys)}
        for group in groups:
            if any(id(p) in targets for p in group['params']):
                group['weight_decay'] = self.base_wd * self.prompt_decay_mult
        return no_decay


def _listing(counts: dict) -> str:
    """'N (a n_a, b n_b)': the total of ``counts`` and each entry, as the log writes them."""
    return f'{sum(counts.values()):,} (' + ', '.join(f'{k} {v:,}' for k, v in counts.items()) \
        + ')'
