from .class_prompt_mapping_hook import ClassPromptMappingHook
from .optim_constructor import PromptOptimWrapperConstructor

__all__ = ['ClassPromptMappingHook', 'PromptOptimWrapperConstructor']
