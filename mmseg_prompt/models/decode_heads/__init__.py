from .bn_linear_head import BNLinearHead

__all__ = ['BNLinearHead']
