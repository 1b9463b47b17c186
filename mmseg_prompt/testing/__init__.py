"""Helpers for tests, examples and the demo, kept out of the runtime package: synthetic datasets
in the real ADE20K / PASCAL Context layouts, seeded random trunk files and the tiny ViT of the
CPU tests. Nothing here is read by mmseg at run time."""
from .synthetic import (ADE20K_SYNTHETIC_CLASSES, PASCAL_CONTEXT_SYNTHETIC_CLASSES,
                        SYNTHETIC_COLOURS, make_synthetic_ade20k, make_synthetic_pascal_context)
from .configs import write_linear_head_config
from .trunks import (TINY_KWARGS, TINY_NAME, TINY_ROPE_KWARGS, TINY_ROPE_NAME,
                     save_random_trunk)

__all__ = ['ADE20K_SYNTHETIC_CLASSES', 'PASCAL_CONTEXT_SYNTHETIC_CLASSES', 'SYNTHETIC_COLOURS',
           'TINY_KWARGS', 'TINY_NAME', 'TINY_ROPE_KWARGS', 'TINY_ROPE_NAME',
           'make_synthetic_ade20k', 'make_synthetic_pascal_context', 'save_random_trunk',
           'write_linear_head_config']
