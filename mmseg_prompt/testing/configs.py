"""Small configs written by tests: a segmentor around any backbone config, with mmseg's simplest
head."""
import textwrap
from pathlib import Path
from typing import Union


def write_linear_head_config(path: Union[str, Path], backbone: dict, channels: int = 64,
                             num_classes: int = 5, size: int = 64) -> Path:
    """Write a config of an ``EncoderDecoder``: ``backbone`` (a config dict), a 1x1 classifier on
    its last output (``FCNHead`` without convs, ``channels`` wide), ``size`` x ``size`` inputs,
    a whole-image test. Returns ``path``."""
    path = Path(path)
    path.write_text(textwrap.dedent(f"""
        custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
        default_scope = 'mmseg'
        model = dict(
            type='EncoderDecoder',
            data_preprocessor=dict(type='SegDataPreProcessor', size=({size}, {size})),
            backbone={backbone!r},
            decode_head=dict(type='FCNHead', in_channels={channels}, channels={channels},
                             num_convs=0, in_index=-1, concat_input=False,
                             num_classes={num_classes}, norm_cfg=None),
            test_cfg=dict(mode='whole'))
    """))
    return path
