from .optim_constructor import PromptOptimWrapperConstructor

__all__ = ['PromptOptimWrapperConstructor']
