"""Every config under configs/ parses and builds; the ViT-L ones without weights."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401
from mmseg_prompt.tooling.label_classes import check_label_classes

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# every config a user runs (the shared-settings files, `_base_/` and `_*.py`, are not)
TOP_LEVEL = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                   if '_base_' not in p and not osp.basename(p).startswith('_'))
VITL = [p for p in TOP_LEVEL if '_vitl_' in osp.basename(p)]
# the ImageNet-21k ViT-L/16 ones (configs/*.py); the DINOv2 and DINOv3 ones (configs/dinov2/,
# configs/dinov3/) are built and counted by test_dino_configs.py
IN21K_VITL = [p for p in VITL if osp.dirname(p) == osp.join(REPO, 'configs')]
# the adapter configs' tuned trunk parameters, by hand: 24 blocks of ViT-L (width 1024) with
# LoRA r=8 on q and v (2 x (8 x 1024 + 1024 x 8)) or AdaptFormer's bottleneck of 64
# (1024 x 64 + 64 + 64 x 1024 + 1024), or BitFit's bias deltas (per block norm1, q/k/v, proj,
# norm2, fc1 (4 x 1024), fc2: 11 x 1024; the patch embedding's; the final norm is not run)
ADAPTER_PARAMS = dict(lora=24 * 2 * (8 * 1024 + 1024 * 8),
                      adaptformer=24 * (1024 * 64 + 64 + 64 * 1024 + 1024),
                      bitfit=24 * 11 * 1024 + 1024)


def test_the_issue_configs_exist():
    names = {osp.relpath(p, osp.join(REPO, 'configs')) for p in TOP_LEVEL}
    assert {'cvpt_vitl_ade20k.py', 'cvpt_vitl_pascal_context.py', 'vpt_vitl_ade20k.py',
            'vpt_vitl_pascal_context.py', 'example/cvpt_tiny_ade20k_synthetic.py',
            'davpt_vitl_ade20k.py', 'davpt_vitl_pascal_context.py', 'davpt_plus_vitl_ade20k.py',
            'davpt_plus_vitl_pascal_context.py', 'cvpt_guided_vitl_ade20k.py',
            'example/davpt_tiny_ade20k_synthetic.py', 'cvpt_plus_vitl_ade20k.py',
            'lora_vitl_ade20k.py', 'lora_vitl_pascal_context.py', 'adaptformer_vitl_ade20k.py',
            'adaptformer_vitl_pascal_context.py'} <= names


@pytest.mark.parametrize('path', TOP_LEVEL, ids=lambda p: osp.relpath(p, REPO))
def test_config_parses_and_carries_custom_imports(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['mmseg_prompt'], allow_failed_imports=False)
    assert cfg.tta_model.type == 'SegTTAModel'
    assert cfg.tta_pipeline and cfg.tta_pipeline_0x
    aux = cfg.model.get('auxiliary_head')
    aux = list(aux) if isinstance(aux, (list, tuple)) else [aux]  # one head, or a list of them
    heads = [h.num_classes for h in [cfg.model.decode_head] + aux if h]
    for loader in ('train_dataloader', 'test_dataloader'):  # right after loading the labels
        types = [t.type for t in cfg[loader].dataset.pipeline]
        i = types.index('CheckSegLabels')
        assert types[i - 1] == 'LoadAnnotations'
        assert cfg[loader].dataset.pipeline[i].get('num_classes') is None  # written once: heads
    check_label_classes(cfg)
    check = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'CheckSegLabels']
    assert check and all(h == check[0].num_classes for h in heads)
    text = open(path).read()
    if '_vitl_' in path:  # each says where its recipe comes from
        for word in ('Recipe', 'optimizer', 'prompts', 'normalisation'):
            assert word in text, f'{path} does not say where its {word} comes from'


@pytest.mark.parametrize('path', IN21K_VITL, ids=osp.basename)
def test_vitl_configs_build_without_weights(path):
    """At real size on the meta device (the tensors' shapes, no storage), as
    test_dino_configs.py builds the DINOv2 and DINOv3 ones."""
    cfg = Config.fromfile(path)
    cfg.model.backbone.pretrained = None
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    bb = model.backbone
    assert bb.depth == 24 and bb.embed_dim == 1024 and bb.out_indices == (7, 11, 15, 23)
    assert type(bb).__name__ == cfg.model.backbone.type
    tuned_bb = sum(p.numel() for n, p in bb.named_parameters() if p.requires_grad)
    adapter = osp.basename(path).split('_')[0]
    if adapter in ADAPTER_PARAMS:  # no prompts: the adapter's own tensors, as the config says
        assert bb.prompts is None and bb.part_names == (adapter,)
        assert tuned_bb == ADAPTER_PARAMS[adapter] and f'{tuned_bb:,}' in open(path).read()
    else:
        counts = [10] * 23 + [20] if type(bb).__name__ == 'DAVPTViT' else [10] * 24
        assert bb.prompts.counts == counts
        bias = 24 * 2 * 1024 if getattr(bb, 'bias_tuning', False) else 0
        assert ('plus' in path) == bool(bias)
        assert tuned_bb == sum(counts) * 1024 + bias
    if 'davpt' in path or 'guided' in path:
        assert type(model).__name__ == 'MetricGuidedEncoderDecoder'
        assert [h.type for h in cfg.custom_hooks] == ['ClassPromptMappingHook']
        assert model.num_prompts == (20 if 'davpt' in path else 10)
    trunk = sum(p.numel() for p in bb.trunk.parameters())
    tuned = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert tuned < 0.2 * trunk  # prompts and heads are a small fraction of the 304M trunk
    ncls = 150 if 'ade20k' in path else 59
    assert model.decode_head.num_classes == ncls
    assert model.test_cfg.mode == 'slide'
    assert tuple(model.test_cfg.crop_size) == ((512, 512) if ncls == 150 else (480, 480))


def test_label_classes_follow_the_heads_and_name_both_keys():
    path = osp.join(REPO, 'configs', 'cvpt_vitl_pascal_context.py')
    cfg = Config.fromfile(path)
    cfg.model.auxiliary_head.num_classes = 60
    with pytest.raises(ValueError, match=r'heads disagree.*decode_head.num_classes = 59, '
                       r'model.auxiliary_head.num_classes = 60'):
        check_label_classes(cfg)
    cfg = Config.fromfile(path)  # heads and the training set's metainfo at 3 classes
    cfg.merge_from_dict({'model.decode_head.num_classes': 3, 'model.auxiliary_head.num_classes': 3,
                         'train_dataloader.dataset.metainfo': dict(classes=('a', 'b', 'c'))})
    with pytest.raises(ValueError, match=r'model.decode_head.num_classes = 3, but '
                       r'val_dataloader.dataset \(PascalContextDataset59\) has 59 classes'):
        check_label_classes(cfg)
    cfg = Config.fromfile(path)
    cfg.train_dataloader.dataset.pipeline[2].num_classes = 150
    with pytest.raises(ValueError, match=r'train_dataloader.dataset.pipeline.2.num_classes = 150'):
        check_label_classes(cfg)


def test_check_hooks_declared_once_reach_the_bases_and_the_train_tool():
    """configs/_base_/check_hooks.py is the one declaration of our hooks: the schedule bases
    inherit it (mmseg's stock tools see only configs), tools/train.py adds from it the hooks a
    config lacks, and keeps a config's own entry of the same type."""
    import importlib.util
    hooks = Config.fromfile(osp.join(REPO, 'configs/_base_/check_hooks.py')).default_hooks
    assert {h.type for h in hooks.values()} == {
        'FrozenTrunkCheckHook', 'NaNLossGuardHook', 'RNGStateHook', 'StaleTempCleanupHook',
        'SegLabelCheckHook', 'StopSignalHook'}
    for schedule in ('schedule_80k.py', 'schedule_160k.py'):
        cfg = Config.fromfile(osp.join(REPO, 'configs/_base_/schedules', schedule))
        for name, hook in hooks.items():
            assert cfg.default_hooks[name] == hook
        assert cfg.default_hooks.checkpoint.type == 'CheckpointHook'  # the schedule's own kept
    spec = importlib.util.spec_from_file_location('train_tool', f'{REPO}/tools/train.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    bare = Config(dict(default_hooks=dict(mine=dict(type='RNGStateHook'))))
    tool.add_check_hooks(bare)
    assert bare.default_hooks.mine == dict(type='RNGStateHook') and 'rng_state' not in \
        bare.default_hooks
    assert {n: h for n, h in bare.default_hooks.items() if n != 'mine'} == \
        {n: h for n, h in hooks.items() if n != 'rng_state'}
    empty = Config(dict())
    tool.add_check_hooks(empty)
    assert empty.default_hooks == hooks
