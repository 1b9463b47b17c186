"""BitFit (Ben Zaken et al., ACL 2022): a trained delta on every bias tensor of the frozen trunk.

For each module f of the trunk with a bias b (docs/methods.md, "BitFit"):

    y = f(x; W, b) + delta_b = f(x; W, b + delta_b)

for a Linear (x W^T + b), the patch embedding's Conv2d (b per output channel) and a LayerNorm
(LN(x) = xhat * gamma + beta: the delta shifts beta). An Eva attention with separate query and
value biases (DINOv3 ``_qkvb``) adds [b_q, 0, b_v] to its fused ``attn.qkv`` output: the deltas
are [dq, 0, dv] there (the trunk has no key bias, so none is added). A module without a bias
gets no delta. The trunk's tensors never change: each delta, zero at init, is added to its
module's output by a forward hook (``TuningPart.register_output_hook``), so timm's forward runs
unchanged and BitFit combines with every other part; :meth:`BitFit.merge_into` adds each delta
to its bias tensor.

The biases tuned are those of the modules the backbone runs: the patch embedding, the pre-norm,
every block and the final norm when the backbone applies it (its ``final_norm`` with the last
block among ``out_indices``, a trunk fact the backbone passes); the trunk's pooling norm and
head, which the backbone never runs, are left.
"""
from typing import Dict, Set

import torch
import torch.nn as nn
from mmseg.registry import MODELS
from timm.models.eva import EvaAttention

from .attention_projections import hooked_qkv
from .tuning_part import TuningPart

_SEPARATOR = '-'  # stands for '.' in a delta's key: ParameterDict keys cannot hold a '.'
# the trunk's modules the backbone runs (the final norm apart: ``final_norm``)
_RUN = ('patch_embed', 'norm_pre', 'blocks')


@MODELS.register_module()
class BitFit(TuningPart):
    """A delta on every bias tensor of the frozen trunk (module docstring), a part of
    :class:`FrozenViT`.

    Args:
        final_norm: whether the backbone runs the trunk's final norm, whose bias is then tuned
            too (the backbone passes it: ``TRUNK_ARGS``).

    Parameters ``deltas.<key>``, one per bias tensor, of its shape, float32: the key is the
    trunk's state-dict name of the bias with ``.`` written ``-`` (``deltas.blocks-0-attn-qkv-bias``
    for ``trunk.blocks.0.attn.qkv.bias``; :meth:`trunk_name` maps back).
    """

    NAME = 'bitfit'
    TRUNK_ARGS = ('final_norm',)
    METHOD = 'BitFit'
    MERGES_INTO_TRUNK = True

    def __init__(self, final_norm: bool):
        super().__init__()
        self.final_norm = final_norm
        self.deltas = nn.ParameterDict()

    @staticmethod
    def key(name: str) -> str:
        """The delta's key of the trunk's bias ``name`` ('blocks.0.norm1.bias')."""
        return name.replace('.', _SEPARATOR)

    @staticmethod
    def trunk_name(key: str) -> str:
        """The trunk's state-dict name of the bias whose delta is ``key``."""
        return key.replace(_SEPARATOR, '.')

    def attach(self, trunk: nn.Module, model_name: str) -> None:
        """Create a zero delta for each bias tensor of the modules the backbone runs and hook
        the module whose output the bias is added to."""
        roots = [(n, getattr(trunk, n)) for n in _RUN if isinstance(getattr(trunk, n, None),
                                                                    nn.Module)]
        norm = getattr(trunk, 'norm', None)
        if self.final_norm and isinstance(norm, nn.Module):
            roots.append(('norm', norm))
        for root, top in roots:
            for sub, module in top.named_modules(prefix=root):
                self._attach_module(sub, module, model_name)

    def _attach_module(self, name: str, module: nn.Module, model_name: str) -> None:
        biases = {n: p for n, p in module.named_parameters(recurse=False) if 'bias' in n}
        if not biases:
            return
        if isinstance(module, EvaAttention) and set(biases) == {'q_bias', 'v_bias'}:
            keys = {}
            for n, p in biases.items():
                keys[n] = self.key(f'{name}.{n}')
                self.deltas[keys[n]] = nn.Parameter(torch.zeros(p.shape))
            self.register_output_hook(hooked_qkv(module), _add_qv_deltas, q=keys['q_bias'],
                                      v=keys['v_bias'])
            return
        if set(biases) != {'bias'} or not isinstance(module, (nn.Linear, nn.LayerNorm,
                                                              nn.Conv2d)):
            raise ValueError(
                f'BitFit: {model_name}\'s {type(module).__name__} `{name}` has the bias tensors '
                f'{sorted(biases)}, and BitFit knows how a Linear, a LayerNorm, a Conv2d and an '
                f'Eva attention\'s q_bias/v_bias add theirs, not this module; pick a trunk of '
                f'those (model.backbone.model_name)')
        bias = biases['bias']
        key = self.key(f'{name}.bias')
        self.deltas[key] = nn.Parameter(torch.zeros(bias.shape))
        # a Conv2d's output is (B, C, H, W): its bias is per channel, the others' trailing
        trailing = 2 if isinstance(module, nn.Conv2d) else 0
        self.register_output_hook(module, _add_delta, key=key, trailing=trailing)

    def merge_into(self, trunk: nn.Module) -> None:
        """b += delta_b for every bias tensor: the trunk alone then computes trunk + BitFit."""
        with torch.no_grad():
            for key, delta in self.deltas.items():
                bias = trunk.get_parameter(self.trunk_name(key))
                if bias.shape != delta.shape:
                    raise ValueError(f'BitFit delta `{key}` has shape {tuple(delta.shape)}, '
                                     f'the trunk\'s `{self.trunk_name(key)}` '
                                     f'{tuple(bias.shape)}: not the trunk it was built on')
                bias += delta.to(bias.dtype)

    def no_decay_parameters(self) -> Set[str]:
        """Every delta: biases take no weight decay (mmseg's ``bias_decay_mult=0``)."""
        return {f'deltas.{key}' for key in self.deltas}

    def weights_layout(self) -> Dict[str, bool]:
        # which biases there are is in the delta's names, so a checkpoint's keys say it all
        return {}

    def extra_repr(self) -> str:
        return f'final_norm={self.final_norm}'


def _add_delta(module: nn.Module, inputs, output: torch.Tensor, *, part: BitFit, key: str,
               trailing: int) -> torch.Tensor:
    """Forward hook: the module's output + its bias delta (broadcast over the dims after the
    bias's for a Conv2d's channels)."""
    delta = part.deltas[key].to(output.dtype)
    return output + delta.reshape(delta.shape + (1,) * trailing)


def _add_qv_deltas(module: nn.Linear, inputs, output: torch.Tensor, *, part: BitFit, q: str,
                   v: str) -> torch.Tensor:
    """Forward hook on an Eva attention's fused qkv: output (..., 3W) + [dq, 0, dv]."""
    dq, dv = part.deltas[q], part.deltas[v]
    return output + torch.cat((dq, torch.zeros_like(dq), dv)).to(output.dtype)

