from .bf16_optim_wrapper import BF16OptimWrapper, bf16_device
from .class_prompt_mapping_hook import ClassPromptMappingHook
from .label_check_hook import SegLabelCheckHook
from .optim_constructor import PromptOptimWrapperConstructor
from .stale_temp_cleanup import StaleTempCleanupHook
from .stop_signal import STOPPED_EXIT_CODE, StopSignalHook, TrainingStopped
from .training_checks import (FrozenTrunkCheckHook, NaNLossGuardHook, RNGStateHook,
                              tensors_sha256)

__all__ = ['BF16OptimWrapper', 'ClassPromptMappingHook', 'FrozenTrunkCheckHook',
           'NaNLossGuardHook', 'PromptOptimWrapperConstructor', 'RNGStateHook',
           'STOPPED_EXIT_CODE', 'SegLabelCheckHook', 'StaleTempCleanupHook', 'StopSignalHook',
           'TrainingStopped', 'bf16_device', 'tensors_sha256']
