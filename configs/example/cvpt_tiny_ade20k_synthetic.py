# The built-in example (`make demo`, tools/demo.py): configs/cvpt_vitl_ade20k.py shrunk to run on
# a CPU in minutes. Same dataset type (ADE20KDataset, on a synthetic dataset in ADE20K's folder
# layout), same model structure (CVPTViT -> Feature2Pyramid -> UPerHead + FCN auxiliary head),
# same sliding-window test and the same TTA; smaller trunk, images, crops and schedule.
_base_ = ['../cvpt_vitl_ade20k.py']

data_root = 'demo_out/data/ade/ADEChallengeData2016'  # tools/demo.py generates it
crop_size = (128, 128)
test_scale = (512, 128)  # ADE20K's (2048, 512) shrunk with the crop
# BN, not the real configs' SyncBN: on one CPU process there is no process group to sync over.
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        model_name='vit_base_patch16_224',
        model_kwargs=dict(depth=4, embed_dim=64, num_heads=2),  # a tiny timm ViT
        pretrained='demo_out/tiny_vit_trunk.pth',  # tools/demo.py saves it
        img_size=128,
        out_indices=(0, 1, 2, 3),
        num_prompts=4),
    neck=dict(embed_dim=64, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[64] * 4, channels=64, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=64, channels=32, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(85, 85)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels'),
    dict(type='RandomResize', scale=test_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels'),
    dict(type='PackSegInputs')
]
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
flips = [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')]
# tta_pipeline (1.x style) is the real config's, unchanged; the 0.x one follows test_scale.
tta_pipeline_0x = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale=(int(test_scale[0] * r), int(test_scale[1] * r)),
                           keep_ratio=True) for r in img_ratios],
                     flips, [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])
]
train_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# A few hundred iterations: a higher learning rate and a short warm-up than the real schedule.
max_iters = 300
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1, save_best=None),
    visualization=dict(interval=4))  # with --show-dir: draw every 4th test image
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
