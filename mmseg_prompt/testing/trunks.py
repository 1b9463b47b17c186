"""Local trunk files for examples and tests: a tiny timm ViT spec and seeded random trunks."""
from pathlib import Path
from typing import Mapping, Union

import timm
import torch
import torch.nn as nn

# A tiny ViT (3 blocks, width 64) for the CPU tests; the architecture is timm's own.
TINY_NAME = 'vit_base_patch16_224'
TINY_KWARGS = dict(depth=3, embed_dim=64, num_heads=2)
# A tiny DINOv3-style trunk (timm's Eva: RoPE, 4 registers, LayerScale, separate q/v biases),
# LayerScale started at 0.5 instead of DINOv3's 1e-5 so that its blocks do more than pass through.
TINY_ROPE_NAME = 'vit_small_patch16_dinov3_qkvb'
TINY_ROPE_KWARGS = dict(depth=3, embed_dim=64, num_heads=2, init_values=0.5)


def save_random_trunk(backbone_cfg: Mapping, path: Union[str, Path], seed: int = 0) -> nn.Module:
    """Build the timm trunk a backbone config names (``model_name``, ``img_size``,
    ``model_kwargs``) with seeded random weights and save its state dict to ``path``, as a local
    pretrained file for examples and tests (nothing is downloaded). Returns the trunk."""
    torch.manual_seed(seed)
    trunk = timm.create_model(backbone_cfg['model_name'], num_classes=0,
                              img_size=backbone_cfg['img_size'],
                              **backbone_cfg.get('model_kwargs', {}))
    torch.save(trunk.state_dict(), path)
    return trunk
