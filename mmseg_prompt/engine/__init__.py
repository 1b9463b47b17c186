from .bf16_optim_wrapper import BF16OptimWrapper, bf16_device
from .class_prompt_mapping_hook import ClassPromptMappingHook
from .optim_constructor import PromptOptimWrapperConstructor

__all__ = ['BF16OptimWrapper', 'ClassPromptMappingHook', 'PromptOptimWrapperConstructor',
           'bf16_device']
