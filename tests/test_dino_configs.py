"""The DINOv2 and DINOv3 configs (configs/dinov2/, configs/dinov3/): each parses, says where its
recipe comes from, changes only the trunk against its ImageNet-21k counterpart, and builds at
real size (on the meta device: shapes without memory) with the tuned and frozen parameter
counts computed here by hand from the architectures."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401
from mmseg_prompt.tooling.config_checks import check_sizes_fit_patch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRUNKS = ('dinov2', 'dinov3')
CONFIGS = sorted(p for t in TRUNKS for p in glob.glob(osp.join(REPO, 'configs', t, '*.py')))
METHODS = ('linear', 'vpt', 'cvpt', 'davpt_plus', 'lora', 'adaptformer')
DATASETS = dict(ade20k=150, pascal_context=59)
D, DEPTH = 1024, 24  # ViT-L: width, blocks
# ImageNet mean and std on the 0-255 scale: both trunks' evaluations normalise so
IMAGENET = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
TRUNK = dict(
    dinov2=dict(model_name='vit_large_patch14_reg4_dinov2', img_size=518,
                pretrained='checkpoints/dinov2_vitl14_reg4_pretrain.pth'),
    dinov3=dict(model_name='vit_large_patch16_dinov3', img_size=512,
                pretrained='checkpoints/dinov3_vitl16_pretrain_lvd1689m.pth'))


def name(path):
    return osp.relpath(path, osp.join(REPO, 'configs'))


def method_of(path):
    return osp.basename(path).split('_vitl_')[0]


def dataset_of(path):
    return osp.basename(path).split('_vitl_')[1][:-3]


def trunk_params(trunk):
    """The frozen trunk's parameters, by hand. Per block: two LayerNorms (2 D each), the
    attention's fused qkv (3 D^2, with 3 D biases in DINOv2, none in DINOv3) and output
    projection (D^2 + D), the MLP (D -> 4D -> D: 8 D^2 + 5 D), two LayerScales (D each).
    Outside the blocks: the patch embedding (3 p^2 D + D), the class token and 4 registers (5 D),
    DINOv2's position table of the 37 x 37 pretraining grid (DINOv3 has RoPE: no table), the final
    LayerNorm (2 D)."""
    qkv_bias = 3 * D if trunk == 'dinov2' else 0
    block = 2 * D + (3 * D * D + qkv_bias) + (D * D + D) + (8 * D * D + 5 * D) + 2 * D + 2 * D
    patch = 14 if trunk == 'dinov2' else 16
    pos = 37 * 37 * D if trunk == 'dinov2' else 0
    return DEPTH * block + (3 * patch * patch * D + D) + 5 * D + pos + 2 * D


def part_params(method):
    """The trunk part's tuned parameters: prompts M x D per block (DA-VPT: 20 guided ones in the
    last), DA-VPT+'s K/V bias deltas 2 x D per block, LoRA r=8 on q and v, AdaptFormer's
    bottleneck of 64 (down D x 64 + 64, up 64 x D + D)."""
    return dict(
        linear=0,
        vpt=DEPTH * 10 * D,
        cvpt=DEPTH * 10 * D,
        davpt_plus=(23 * 10 + 20) * D + DEPTH * 2 * D,
        lora=DEPTH * 2 * (8 * D + D * 8),
        adaptformer=DEPTH * (D * 64 + 64 + 64 * D + D))[method]


def head_params(method, classes):
    """The neck's and heads' parameters, by hand (the ImageNet-21k configs' UperNet, unchanged).
    Linear: the BatchNorm (2 D) and the 1x1 classifier. UperNet: Feature2Pyramid (x4: two 2x2
    transposed convs with a BN between; x2: one), UPerHead of width C = 512 (PPM of 4 scales,
    1x1 laterals on 3 levels, 3x3 FPN convs, 3x3 bottlenecks; every conv with a BN, no bias),
    the FCN auxiliary head (one 3x3 conv to 256, BN); each head's 1x1 classifier."""
    if method == 'linear':
        return 2 * D + D * classes + classes
    C, bn = 512, lambda c: 2 * c
    tconv = 4 * D * D + D
    neck = (2 * tconv + bn(D)) + tconv
    ppm = 4 * (D * C + bn(C))
    bottleneck = 9 * (D + 4 * C) * C + bn(C)
    laterals = 3 * (D * C + bn(C))
    fpn = 3 * (9 * C * C + bn(C))
    fpn_bottleneck = 9 * 4 * C * C + bn(C)
    decode = ppm + bottleneck + laterals + fpn + fpn_bottleneck + C * classes + classes
    aux = 9 * D * 256 + bn(256) + 256 * classes + classes
    return neck + decode + aux


def test_every_trunk_method_and_dataset_has_a_config():
    want = {f'{t}/{m}_vitl_{d}.py' for t in TRUNKS for m in METHODS for d in DATASETS}
    assert {name(p) for p in CONFIGS} == want


@pytest.mark.parametrize('path', CONFIGS, ids=name)
def test_config_says_where_its_recipe_comes_from(path):
    header = []
    for line in open(path):
        if not line.startswith('#'):
            break
        header.append(line)
    text = ''.join(header)
    assert '# Recipe sources:' in text
    bullets = [ln[4:].split(':')[0] for ln in header if ln.startswith('# - ')]
    assert bullets[0] == 'trunk' and 'optimizer' in bullets and 'input normalisation' in bullets
    assert ('head' if method_of(path) == 'linear' else 'prompts') in bullets
    trunk = path.split(osp.sep)[-2]
    assert TRUNK[trunk]['model_name'] in text
    if method_of(path) == 'linear' and dataset_of(path) == 'ade20k':  # the protocol's sources
        sources = ('dinov2/eval/segmentation/models/decode_heads/linear_head.py',
                   'dinov2_vitl14_ade20k_linear_config.py') if trunk == 'dinov2' else (
            'config-ade20k-linear-training.yaml', 'dinov3/eval/segmentation/models/heads/'
            'linear_head.py', 'dinov3/eval/segmentation/config.py')
        flat = ''.join(ln[1:].strip() for ln in header)  # a path may wrap across lines
        for src in sources:
            assert src in flat, src


@pytest.mark.parametrize('path', CONFIGS, ids=name)
def test_config_sets_the_trunk_its_normalisation_and_the_protocol(path):
    cfg = Config.fromfile(path)
    trunk, method, data = path.split(osp.sep)[-2], method_of(path), dataset_of(path)
    bb = cfg.model.backbone
    for key, value in TRUNK[trunk].items():
        assert bb[key] == value, key
    pre = cfg.model.data_preprocessor
    assert (pre.mean, pre.std) == (IMAGENET['mean'], IMAGENET['std']) and pre.bgr_to_rgb
    # crops of whole patches (DINOv2: 518 = 37 x 37 and 476 = 34 x 34), as the tools require
    crop = dict(dinov2=dict(ade20k=518, pascal_context=476),
                dinov3=dict(ade20k=512, pascal_context=480))[trunk][data]
    crop = (crop, crop)
    check_sizes_fit_patch(cfg)
    assert tuple(cfg.crop_size) == tuple(pre.size) == crop
    assert tuple(cfg.model.test_cfg.crop_size) == crop and cfg.model.test_cfg.mode == 'slide'
    assert tuple(cfg.model.test_cfg.stride) == (crop[0] * 2 // 3,) * 2  # mmseg's 2/3 overlap
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert pipeline == cfg.train_pipeline
    stock = Config.fromfile(osp.join(REPO, 'configs/_base_/datasets', dict(
        ade20k='ade20k.py', pascal_context='pascal_context_59.py')[data])).train_pipeline
    assert [t for t in pipeline if t.type != 'RandomCrop'] == \
        [t for t in stock if t.type != 'RandomCrop']  # the dataset's pipeline, but for the crop
    assert [tuple(t.crop_size) for t in pipeline if t.type == 'RandomCrop'] == [crop]
    # test images padded to whole patches (the padding is cut from the logits)
    assert pre.get('test_cfg') == (dict(size_divisor=14) if trunk == 'dinov2' else None)
    assert cfg.model.decode_head.num_classes == DATASETS[data]
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16, both papers' and ours
    if method == 'linear':
        assert bb.type == 'FrozenViT' and tuple(bb.out_indices) == (23,) and bb.final_norm
        assert not bb.get('parts') and not bb.get('prompts')
        head = cfg.model.decode_head
        assert head.type == 'BNLinearHead' and head.channels == head.in_channels == D
        assert head.dropout_ratio == (0.0 if trunk == 'dinov2' else 0.1)
        assert 'auxiliary_head' not in cfg.model and 'neck' not in cfg.model
        opt = cfg.optim_wrapper.optimizer
        assert (opt.type, opt.lr, opt.betas) == ('AdamW', 1e-3, (0.9, 0.999))
        assert opt.weight_decay == (1e-4 if trunk == 'dinov2' else 1e-3)
        assert cfg.optim_wrapper.clip_grad is None
        assert cfg.train_cfg.max_iters == 40000
        warmup, decay = cfg.param_scheduler
        assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', 1e-6, 1500)
        assert decay.type == ('PolyLR' if trunk == 'dinov2' else 'CosineAnnealingLR')
        assert (decay.begin, decay.end, decay.eta_min) == (1500, 40000, 0.0)


UPERNET = [p for p in CONFIGS if method_of(p) != 'linear']


@pytest.mark.parametrize('path', UPERNET, ids=name)
def test_upernet_config_is_its_imagenet21k_config_with_the_trunk_swapped(path):
    """Everything but the trunk (model name, weights, img_size), the input normalisation and,
    for DINOv2, the crops is the ImageNet-21k config's: method, neck, heads, data, schedule,
    hooks."""
    ours = Config.fromfile(path).to_dict()
    theirs = Config.fromfile(osp.join(REPO, 'configs', osp.basename(path))).to_dict()
    trunk = path.split(osp.sep)[-2]
    for cfg in (ours, theirs):
        for key in ('model_name', 'pretrained', 'img_size'):
            cfg['model']['backbone'].pop(key)
        for key in ('mean', 'std') + (('size', 'test_cfg') if trunk == 'dinov2' else ()):
            cfg['model']['data_preprocessor'].pop(key, None)
        if trunk == 'dinov2':  # the crops (checked by the test above)
            for key in ('crop_size', 'train_pipeline'):
                cfg.pop(key)
            cfg['model'].pop('test_cfg')
            cfg['train_dataloader']['dataset'].pop('pipeline')
        for key in list(cfg):  # the trunk files' variables
            if key.startswith(trunk + '_'):
                cfg.pop(key)
    assert ours == theirs
    assert tuple(Config.fromfile(path).model.backbone.out_indices) == (7, 11, 15, 23)


def count(path):
    """Build the config's model at real size on the meta device, without weights; returns
    (tuned trunk-part params, tuned neck and head params, frozen params, the model)."""
    cfg = Config.fromfile(path)
    cfg.model.backbone.pretrained = None
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    bb = model.backbone
    part = sum(p.numel() for p in bb.parameters() if p.requires_grad)
    heads = sum(p.numel() for n, p in model.named_parameters()
                if p.requires_grad and not n.startswith('backbone.'))
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return part, heads, frozen, model


@pytest.mark.parametrize('path', CONFIGS, ids=name)
def test_builds_at_real_size_with_the_parameter_counts_by_hand(path):
    trunk, method, data = path.split(osp.sep)[-2], method_of(path), dataset_of(path)
    part, heads, frozen, model = count(path)
    bb = model.backbone
    backbone_type, parts = dict(
        linear=('FrozenViT', ()), vpt=('VPTDeepViT', ('prompts',)),
        cvpt=('CVPTViT', ('prompts',)), davpt_plus=('DAVPTViT', ('prompts', 'kv_bias')),
        lora=('FrozenViT', ('lora',)), adaptformer=('FrozenViT', ('adaptformer',)))[method]
    assert type(bb).__name__ == backbone_type and bb.part_names == parts
    assert bb.depth == DEPTH and bb.embed_dim == D
    assert bb.patch_size == ((14, 14) if trunk == 'dinov2' else (16, 16))
    assert bb.num_prefix_tokens == 5  # the class token and 4 registers
    assert part == part_params(method)
    assert heads == head_params(method, DATASETS[data])
    assert frozen == trunk_params(trunk)
    # what is frozen is the trunk, all of it
    assert frozen == sum(p.numel() for p in bb.trunk.parameters())
    assert not any(p.requires_grad for p in bb.trunk.parameters())
