"""Dataset helpers: synthetic datasets in the real layouts, a layout check and a label check.

Importing registers the ``CheckSegLabels`` transform in mmseg's TRANSFORMS registry.
"""
from .label_check import CheckSegLabels
from .layout import DatasetLayoutError, check_dataset_layout
from .synthetic import (ADE20K_SYNTHETIC_CLASSES, PASCAL_CONTEXT_SYNTHETIC_CLASSES,
                        SYNTHETIC_COLOURS, make_synthetic_ade20k, make_synthetic_pascal_context)

__all__ = ['ADE20K_SYNTHETIC_CLASSES', 'CheckSegLabels', 'DatasetLayoutError',
           'PASCAL_CONTEXT_SYNTHETIC_CLASSES', 'SYNTHETIC_COLOURS', 'check_dataset_layout',
           'make_synthetic_ade20k', 'make_synthetic_pascal_context']
