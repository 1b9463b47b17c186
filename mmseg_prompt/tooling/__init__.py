"""The helpers of this package's tools (tools/train.py, test.py, analysis/): loading a config as
mmseg's tools do, the checks that run before a Runner is built (sizes against the patch, dataset
layout, the heads' class count against the datasets), a gloo start for CPU-only distributed
launches, FLOP counting (``complexity.py``, ``flops.py``) and the cost benchmark's parts
(``benchmark/``). Nothing here is needed by a Runner built from a config; mmseg's stock
tools do without it (the schedule bases' hooks cover them). Named for what it holds: in mmseg,
``apis`` is the inference API (``mmseg.apis``), which this package leaves to mmseg."""
from .complexity import SegmentorForward, flop_analyzer, sdpa_flop_jit
from .config_checks import check_sizes_fit_patch
from .cpu_distributed import prepare_cpu_distributed
from .flops import inference_flops, train_flops
from .label_classes import check_label_classes, dataset_classes, head_classes
from .tool_config import check_and_prepare, load_tool_config

__all__ = ['SegmentorForward', 'check_and_prepare', 'check_label_classes',
           'check_sizes_fit_patch', 'dataset_classes', 'flop_analyzer', 'head_classes',
           'inference_flops', 'load_tool_config', 'prepare_cpu_distributed', 'sdpa_flop_jit',
           'train_flops']
