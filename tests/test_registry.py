"""Importing the package registers its modules; a config with only custom_imports builds them."""
import json
import subprocess
import sys
import textwrap

import pytest

from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME


def test_import_registers_in_mmseg_registry():
    import mmseg_prompt
    from mmseg.registry import MODELS
    from mmseg_prompt.models.backbones import FrozenViT
    assert mmseg_prompt.__version__
    assert MODELS.get('FrozenViT') is FrozenViT
    # and it is found from mmseg's scope, the way configs look it up
    assert MODELS.get('mmseg.FrozenViT') is FrozenViT
    from mmseg_prompt.models.backbones import CVPTViT, VPTDeepViT
    assert MODELS.get('mmseg.CVPTViT') is CVPTViT
    assert MODELS.get('mmseg.VPTDeepViT') is VPTDeepViT


@pytest.mark.slow  # a fresh interpreter (subprocess)
def test_config_with_only_custom_imports_builds_our_modules(tmp_path):
    """In a fresh interpreter, the config's custom_imports alone must register FrozenViT."""
    cfg_file = tmp_path / 'only_custom_imports.py'
    cfg_file.write_text(textwrap.dedent(f"""
        custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
        norm_cfg = dict(type='BN', requires_grad=True)
        model = dict(
            type='EncoderDecoder',
            data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3),
            backbone=dict(type='FrozenViT', model_name='{TINY_NAME}', img_size=64,
                          model_kwargs={TINY_KWARGS!r}, out_indices=(0, 1, 2)),
            decode_head=dict(type='FCNHead', in_channels=64, in_index=2, channels=32,
                             num_convs=1, num_classes=5, norm_cfg=norm_cfg),
            test_cfg=dict(mode='whole'))
    """))
    script = textwrap.dedent(f"""
        import json, sys, torch
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmseg.registry import MODELS
        before = 'mmseg_prompt' in sys.modules
        cfg = Config.fromfile({str(cfg_file)!r})
        init_default_scope('mmseg')
        model = MODELS.build(cfg.model)
        feats = model.extract_feat(torch.zeros(1, 3, 64, 80))
        print(json.dumps(dict(before=before, after='mmseg_prompt' in sys.modules,
                              backbone=type(model.backbone).__name__,
                              module=type(model.backbone).__module__,
                              shapes=[list(f.shape) for f in feats])))
    """)
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res['before'] is False and res['after'] is True
    assert res['backbone'] == 'FrozenViT'
    assert res['module'].startswith('mmseg_prompt.')
    assert res['shapes'] == [[1, 64, 4, 5]] * 3
