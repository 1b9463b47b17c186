"""The dtype the frozen trunk's matmul weights are stored in (``FrozenViT(trunk_dtype=...)``).

Under autocast every frozen float32 weight is cast again at every use: autocast caches casts
only of tensors that require grad (docs/cost.md, "Kernel launches"). A trunk stored in
bfloat16 is cast once, when it is loaded: the weights and biases of its ``nn.Linear`` and
``nn.Conv2d`` layers, which hold all but a few thousandths of a ViT's values, are kept in
bfloat16; its norms, position embedding and prefix tokens stay float32, the dtype autocast
runs them in, so they are not cast either. Under bfloat16 autocast it computes what the
float32 trunk computes, bit for bit: autocast casts the float32 weights to the same bfloat16
values (round to nearest even) before every product.

The trunk's fingerprint (``FrozenViT.trunk_sha256``) is that of the float32 values it was cast
from, taken just before the cast, so a bfloat16 trunk and a float32 one from the same file have
the same fingerprint and load each other's tuned checkpoints (docs/methods.md, "Provenance").
"""
from typing import Iterator

import torch
import torch.nn as nn

TRUNK_DTYPES = dict(float32=torch.float32, bfloat16=torch.bfloat16)


def check_trunk_dtype(name: str) -> torch.dtype:
    """The torch dtype of config value ``name``; a ValueError naming the choices otherwise."""
    if name not in TRUNK_DTYPES:
        raise ValueError(f'model.backbone.trunk_dtype must be one of {sorted(TRUNK_DTYPES)}, '
                         f'got {name!r}')
    return TRUNK_DTYPES[name]


def matmul_layers(trunk: nn.Module) -> Iterator[nn.Module]:
    """The trunk's ``nn.Linear`` and ``nn.Conv2d`` layers, whose weights autocast casts."""
    return (m for m in trunk.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def store_matmul_weights(trunk: nn.Module, dtype: torch.dtype) -> None:
    """Keep the weights and biases of the trunk's matmul layers in ``dtype`` (in place)."""
    for layer in matmul_layers(trunk):
        layer.to(dtype)


def stored_dtype(trunk: nn.Module) -> torch.dtype:
    """The dtype the trunk's matmul weights are stored in now."""
    return next(matmul_layers(trunk)).weight.dtype
