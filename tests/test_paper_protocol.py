"""The papers' protocol configs (configs/paper_protocol/): what each builds (mmseg's own
SETRUPHead, the SGD recipe, the method's parts, counted by hand), and one training iteration of
each with tiny overrides."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmseg.models.decode_heads import SETRUPHead
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAPER = sorted(glob.glob(osp.join(REPO, 'configs', 'paper_protocol', '*.py')))
WIDTH = 32


def prompt_values(name: str, width: int) -> int:
    """The trunk part's values by hand: prompts per block x 24 blocks (DA-VPT: 20 in 23 blocks,
    10 guided in block 11), plus the K/V bias deltas of DA-VPT+ (2 x width per block); BitFit's
    bias deltas (per block norm1, q/k/v, proj, norm2, fc1 (4 x width), fc2; the patch
    embedding's; the final norm is not run)."""
    if name.startswith('bitfit'):
        return 24 * 11 * width + width
    if name.startswith('davpt'):
        count = 23 * 20 + 10
    else:
        count = 24 * int(name.split('_')[0].lstrip('vptcvpt'))
    return count * width + (24 * 2 * width if name.startswith('davpt_plus') else 0)


def tiny(path: str) -> Config:
    """The config with a width-32 trunk (24 blocks, as ViT-L, so out_indices stay), random
    weights, 64 x 64 inputs, BatchNorm (one process) and the heads resized to it."""
    cfg = Config.fromfile(path)
    bb = cfg.model.backbone
    bb.pretrained = None
    bb.model_kwargs = dict(bb.get('model_kwargs') or {}, embed_dim=WIDTH, num_heads=2)
    bb.img_size = 64
    for head in [cfg.model.decode_head] + list(cfg.model.auxiliary_head):
        head.update(in_channels=WIDTH, channels=16, norm_cfg=dict(type='BN', requires_grad=True))
    cfg.model.data_preprocessor.size = (64, 64)
    cfg.model.test_cfg = dict(mode='whole')
    return cfg


def batch(num_classes: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                        pad_shape=(64, 64)))
        seg = torch.randint(0, num_classes, (4, 4), generator=g)
        s.gt_sem_seg = PixelData(data=seg.repeat_interleave(16, 0).repeat_interleave(16, 1)[None])
        samples.append(s)
    return dict(inputs=[torch.randint(0, 255, (3, 64, 64), generator=g).byte()
                        for _ in samples], data_samples=samples)


def test_every_paper_row_has_a_config():
    names = {osp.basename(p) for p in PAPER}
    for ds in ('ade20k', 'pascal_context'):
        assert {f'{m}_setrpup_{ds}.py' for m in (
            'vpt10_cvpt_protocol', 'vpt20_davpt_protocol', 'cvpt10', 'cvpt200', 'davpt',
            'davpt_plus')} <= names


@pytest.mark.parametrize('path', PAPER, ids=osp.basename)
def test_paper_config_builds_its_method_and_trains_one_iteration(path):
    name = osp.basename(path)
    cfg = tiny(path)
    ncls = 150 if 'ade20k' in name else 59
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    heads = [model.decode_head] + list(model.auxiliary_head)
    assert all(type(h) is SETRUPHead and h.num_classes == ncls for h in heads)
    assert [h.in_index for h in heads] == [3, 0, 1, 2]
    assert [h.up_convs[0][1].scale_factor for h in heads] == [2, 4, 4, 4]
    assert [len(h.up_convs) for h in heads] == [4, 2, 2, 2]
    bb = model.backbone
    assert bb.out_indices == (9, 14, 19, 23) and bb.trunk_train_mode == ('cvpt' in name)
    tuned_bb = sum(p.numel() for p in bb.parameters() if p.requires_grad)
    assert tuned_bb == prompt_values(name, WIDTH)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    opt = optim.optimizer
    assert type(opt).__name__ == 'SGD'
    lrs = {g['lr'] for g in opt.param_groups}
    assert lrs == {1e-3, 1e-2} and {g['momentum'] for g in opt.param_groups} == {0.9}
    assert {g['weight_decay'] for g in opt.param_groups} == {0.0}
    head_ids = {id(p) for h in heads for p in h.parameters()}
    for g in opt.param_groups:
        assert (g['lr'] == 1e-2) == all(id(p) in head_ids for p in g['params'])
    data = batch(ncls)
    if type(model).__name__ == 'MetricGuidedEncoderDecoder':
        pre = model.data_preprocessor(data, True)
        with bb.tuning_disabled(), torch.no_grad():
            model.collect_class_stats(pre['inputs'], pre['data_samples'])
        model.recluster()
        assert bb.guided_blocks == (11,) and model.mapping_ready()
    before = {n: p.detach().clone() for n, p in bb.named_parameters() if p.requires_grad}
    model.train()
    losses = model.train_step(data, optim)
    assert all(torch.isfinite(v) for v in losses.values())
    if name.startswith('davpt'):
        assert 'loss_metric_patch' in losses and 'loss_metric_cls' in losses
    moved = [n for n, p in bb.named_parameters() if p.requires_grad
             and not torch.equal(p, before[n])]
    assert moved, 'no tuned backbone tensor moved'


@pytest.mark.parametrize('name', ['cvpt200_setrpup_ade20k.py',
                                  'davpt_plus_setrpup_pascal_context.py'])
def test_paper_configs_build_at_real_size(name):
    """ViT-L on the meta device (the tensors' shapes, no storage)."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'paper_protocol', name))
    cfg.model.backbone.pretrained = None
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    bb = model.backbone
    assert bb.depth == 24 and bb.embed_dim == 1024
    assert sum(p.numel() for p in bb.parameters() if p.requires_grad) == \
        prompt_values(name, 1024)
