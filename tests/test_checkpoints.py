"""Checkpoints hold only what trains, round-trip it exactly, and refuse the wrong backbone."""
import subprocess
import sys

import pytest
import timm
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401
from mmseg_prompt.models.backbones import TrunkWeightsError
from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME

REPO = __file__.rsplit('/tests/', 1)[0]


def segmentor(trunk_file=None, width=64, num_prompts=3, method='CVPTViT', **bb):
    return MODELS.build(_model_cfg(trunk_file, width, num_prompts, method, **bb))


def _model_cfg(trunk_file, width=64, num_prompts=3, method='CVPTViT', **bb):
    norm = dict(type='BN', requires_grad=True)
    backbone = dict(type=method, model_name=TINY_NAME, img_size=64,
                    model_kwargs=dict(TINY_KWARGS, embed_dim=width), out_indices=(0, 1, 2),
                    pretrained=None if trunk_file is None else str(trunk_file), **bb)
    if num_prompts is not None:
        backbone['num_prompts'] = num_prompts
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3),
        backbone=backbone,
        decode_head=dict(type='UPerHead', in_channels=[width] * 3, in_index=[0, 1, 2],
                         channels=16, num_classes=5, norm_cfg=norm),
        test_cfg=dict(mode='whole'))


def randomise(model):
    """Give every tuned tensor a distinctive value, as training would."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_()


def test_checkpoint_holds_tuned_weights_only_and_round_trips(tmp_path, tiny_trunk_file):
    trunk_file, _ = tiny_trunk_file
    model = segmentor(trunk_file)
    randomise(model)
    state = model.state_dict()
    assert not [k for k in state if k.startswith('backbone.trunk.')]
    tuned = {n for n, p in model.named_parameters() if p.requires_grad}
    assert tuned <= set(state) and 'backbone.prompts.tokens.0' in state
    ckpt = tmp_path / 'tuned.pth'
    torch.save(dict(state_dict=state), ckpt)

    fresh = segmentor(trunk_file)
    load_checkpoint(fresh, str(ckpt), strict=True)  # strict: nothing reported missing
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    for (k, a), b in zip(model.backbone.trunk.state_dict().items(),
                         fresh.backbone.trunk.state_dict().values()):
        assert torch.equal(a, b), k  # the trunk came back from the pretrained file


def test_tuned_checkpoint_puts_the_trunk_back_through_init_cfg(tmp_path, tiny_trunk_file):
    trunk_file, _ = tiny_trunk_file
    model = segmentor(trunk_file)  # its trunk: the file, position embedding resampled to 64
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'tuned.pth')
    fresh = segmentor(None, init_cfg=dict(type='Pretrained', checkpoint=str(trunk_file)))
    load_checkpoint(fresh, str(tmp_path / 'tuned.pth'), strict=True)  # no init_weights call
    for (k, a), b in zip(model.backbone.trunk.state_dict().items(),
                         fresh.backbone.trunk.state_dict().values()):
        assert torch.equal(a, b), k


def test_tuned_checkpoint_without_a_trunk_file_is_an_error(tmp_path, tiny_trunk_file):
    trunk_file, _ = tiny_trunk_file
    torch.save(dict(state_dict=segmentor(trunk_file).state_dict()), tmp_path / 'tuned.pth')
    with pytest.raises(TrunkWeightsError, match='model.backbone.pretrained'):
        load_checkpoint(segmentor(None), str(tmp_path / 'tuned.pth'))


def test_wrong_backbone_is_refused(tmp_path, tiny_trunk_file):
    trunk_file, _ = tiny_trunk_file
    torch.save(dict(state_dict=segmentor(trunk_file, num_prompts=3).state_dict()),
               tmp_path / 'tuned.pth')
    with pytest.raises(TrunkWeightsError, match=r'prompts.tokens.0.*\(3, 64\).*\(5, 64\)'
                                                r'.*num_prompts'):
        load_checkpoint(segmentor(trunk_file, num_prompts=5), str(tmp_path / 'tuned.pth'))
    with pytest.raises(TrunkWeightsError, match='has `backbone.prompts.tokens.1`, which'):
        load_checkpoint(segmentor(trunk_file, num_prompts=[3, 0, 3]), str(tmp_path / 'tuned.pth'))
    # another width: a trunk of width 96 with its own pretrained file
    torch.manual_seed(0)
    wide = timm.create_model(TINY_NAME, num_classes=0, img_size=64, **dict(TINY_KWARGS,
                                                                             embed_dim=96))
    torch.save(wide.state_dict(), tmp_path / 'wide.pth')
    with pytest.raises(TrunkWeightsError, match=r'\(3, 64\).*\(3, 96\)'):
        load_checkpoint(segmentor(tmp_path / 'wide.pth', width=96), str(tmp_path / 'tuned.pth'))
    # another method: CVPT's tuned weights into a prompt-free FrozenViT segmentor
    with pytest.raises(TrunkWeightsError, match='does not have'):
        load_checkpoint(segmentor(trunk_file, method='FrozenViT', num_prompts=None),
                        str(tmp_path / 'tuned.pth'))


@pytest.mark.slow  # runs tools/export_full_checkpoint.py in a subprocess
def test_exported_full_checkpoint_needs_no_trunk_file(tmp_path, tiny_trunk_file):
    trunk_file, _ = tiny_trunk_file
    model = segmentor(trunk_file).eval()
    randomise(model)
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'tuned.pth')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"default_scope = 'mmseg'\nmodel = {_model_cfg(trunk_file)!r}\n")
    out = tmp_path / 'full.pth'
    res = subprocess.run([sys.executable, f'{REPO}/tools/export_full_checkpoint.py', str(cfg),
                          str(tmp_path / 'tuned.pth'), str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    full = torch.load(out, weights_only=True)['state_dict']
    assert any(k.startswith('backbone.trunk.') for k in full)
    fresh = segmentor(None).eval()  # random trunk, no file: the checkpoint brings it
    load_checkpoint(fresh, str(out), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.extract_feat(x), model.extract_feat(x), rtol=0, atol=0)


def test_optimizer_gets_only_trainable_parameters(tiny_trunk_file):
    trunk_file, _ = tiny_trunk_file
    model = segmentor(trunk_file)
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', constructor='PromptOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        paramwise_cfg=dict(norm_decay_mult=0.0)))
    groups = wrapper.optimizer.param_groups
    in_opt = {id(p): g for g in groups for p in g['params']}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in in_opt} == {n for n, p in model.named_parameters()
                                          if p.requires_grad}
    for i, g in in_opt.items():
        name = names[i]
        if '.prompts.' in name or '.bn.' in name or 'norm' in name:
            assert g['weight_decay'] == 0.0, name
        elif name.endswith('conv.weight'):
            assert g['weight_decay'] == 0.05, name
    # configured prompt decay is honoured
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', constructor='PromptOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        paramwise_cfg=dict(prompt_decay_mult=1.0)))
    decay = {names[id(p)]: g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    assert decay['backbone.prompts.tokens.0'] == 0.05
