"""An optimizer-wrapper constructor that hands the optimizer only what trains."""
from collections import OrderedDict
from typing import List, Optional

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PromptOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, minus every frozen parameter, plus prompt weight decay.

    ``paramwise_cfg`` takes mmengine's options (``custom_keys``, ``norm_decay_mult``, ...) and:

    - ``prompt_decay_mult`` (default 0.0): weight-decay multiplier of parameters whose name
      contains ``.prompts.``; prompts get no weight decay unless configured.

    Frozen modules are skipped whole (no optimizer state, no per-parameter warnings), and what
    the optimizer gets is logged once, grouped by module.

    The parameter groups are plain dicts, as after ``Optimizer.load_state_dict`` (mmengine's
    constructor leaves ``ConfigDict`` groups, which ``torch.compile`` cannot trace through an
    optimizer step: ``compile=True`` in the config, ``tools/train.py --compile``).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        prompt_decay_mult = paramwise_cfg.pop('prompt_decay_mult', 0.0)
        custom_keys = dict(paramwise_cfg.get('custom_keys', {}))
        if optim_wrapper_cfg.get('optimizer', {}).get('weight_decay') is not None:
            custom_keys.setdefault('.prompts.', dict(decay_mult=prompt_decay_mult))
        # a non-empty paramwise_cfg makes the parent build groups through add_params
        paramwise_cfg['custom_keys'] = custom_keys
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
        prompt_wd = sorted({decay[id(p)] for n, p in trainable if '.prompts.' in n})
        summary = ', '.join(f'{k} {v:,}' for k, v in groups.items())
        print_log(f'optimizer: {len(trainable)} trainable tensors ({sum(groups.values()):,} '
                  f'params: {summary}); {len(frozen)} frozen tensors left out'
                  + (f'; prompt weight decay {prompt_wd}' if prompt_wd else ''),
                  logger='current')
        return wrapper
