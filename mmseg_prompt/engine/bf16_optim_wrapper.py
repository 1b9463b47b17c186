"""Mixed precision in bfloat16, on CPU and on GPUs that support it."""
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS


def bf16_device() -> str:
    """'cuda' or 'cpu' when bfloat16 autocast is available there, else ''."""
    if torch.cuda.is_available():
        return 'cuda' if torch.cuda.is_bf16_supported() else ''
    return 'cpu'


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """OptimWrapper whose forward runs under ``torch.autocast(dtype=torch.bfloat16)``.

    Weights, gradients and optimizer state stay float32; bfloat16 has float32's exponent range,
    so no loss scaling is needed. mmengine's ``AmpOptimWrapper`` refuses CPUs; this one runs
    wherever ``bf16_device()`` says bfloat16 autocast is available (``tools/train.py --amp``
    picks it there).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.device_type = bf16_device()
        if not self.device_type:
            raise RuntimeError('this GPU does not support bfloat16; use AmpOptimWrapper (fp16)')

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with super().optim_context(model), torch.autocast(device_type=self.device_type,
                                                          dtype=torch.bfloat16):
            yield
