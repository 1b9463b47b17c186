"""What mmseg's runtime reads: a dataset layout check and a label check (the synthetic dataset
writers of the tests and the demo are in ``mmseg_prompt.testing``).

Importing registers the ``CheckSegLabels`` transform in mmseg's TRANSFORMS registry.
"""
from .label_check import CheckSegLabels
from .label_files import LoadWideSegLabels, label_file_problem, png_header
from .layout import DatasetLayoutError, check_dataset_layout

__all__ = ['CheckSegLabels', 'DatasetLayoutError', 'LoadWideSegLabels', 'check_dataset_layout',
           'label_file_problem', 'png_header']
