# The settings every arm of the prompt comparison shares (docs/comparison.md). Each arm config
# inherits one of the real ViT-L ADE20K configs and this file, and takes these values with
# `{{_base_.comparison_*}}`: the same trunk, data, linear head, schedule and seed for every
# method, so that the arms differ only in what their ViT-L config trains.
#
# - trunk: a tiny timm ViT (patch 8, width 96, 4 blocks) pretrained by this project on synthetic
#   shape segmentation (tools/pretrain_tiny_trunk.py; the harness passes the cached file);
# - data: the hue-pairs task (mmseg_prompt/testing/shape_tasks.py) in ADE20K's folder layout,
#   read by mmseg's ADE20KDataset: 200 training and 60 validation images of 64 x 64;
# - head: linear probing of the last block's tokens after the trunk's final LayerNorm: a 1x1
#   conv, BatchNorm without affine (features standardised, as MAE's linear probing) and the 1x1
#   classifier, no activation and no dropout; no neck, no auxiliary head;
# - schedule: 400 iterations of batch 8, AdamW lr 1e-2 (weight decay 0.05, none on prompts, as
#   the real configs), 20 warm-up iterations then poly; the one learning rate is shared by every
#   arm, head and prompts alike (not tuned per method);
# - augmentation: horizontal flips only; PhotoMetricDistortion is left out because it shifts
#   hue and saturation, which is what the labels are made of.
comparison_size = (64, 64)
comparison_data_root = 'data/hue_pairs/ADEChallengeData2016'
comparison_model = dict(
    data_preprocessor=dict(size=comparison_size),
    backbone=dict(
        model_name='vit_base_patch16_224',
        model_kwargs=dict(patch_size=8, embed_dim=96, depth=4, num_heads=3),
        pretrained='checkpoints/tiny_vit_shapes.pth',  # the harness passes the cached file
        img_size=64,
        out_indices=(3, ),
        final_norm=True),
    neck=None,
    auxiliary_head=None,
    decode_head=dict(
        _delete_=True,
        type='FCNHead',
        in_channels=96,
        channels=96,
        num_convs=1,  # a 1x1 conv, then BatchNorm without affine and no activation: the
        kernel_size=1,  # features are standardised as in MAE's linear probing, and the head
        act_cfg=None,  # stays linear at test time
        concat_input=False,
        in_index=-1,
        dropout_ratio=0.0,
        num_classes=150,  # ADE20K's, as the real config; the task uses ids 1-4 of them
        norm_cfg=dict(type='BN', affine=False),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    test_cfg=dict(mode='whole'))
_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels'),
    dict(type='PackSegInputs')
]
comparison_train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=comparison_data_root, pipeline=_train_pipeline))
comparison_val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=comparison_data_root, pipeline=_test_pipeline))
# `--tta`: the real config's 1.x pipeline (ratios 0.5-1.75 of the image, with flip) applies
# unchanged; the 0.x one is rebuilt around the 64 x 64 test scale.
comparison_tta_pipeline_0x = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale=(int(64 * r), int(64 * r)), keep_ratio=True)
                      for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)],
                     [dict(type='RandomFlip', prob=0., direction='horizontal'),
                      dict(type='RandomFlip', prob=1., direction='horizontal')],
                     [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])
]
comparison_max_iters = 400
comparison_optim_wrapper = dict(optimizer=dict(lr=1e-2))
comparison_param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=20, end=400, by_epoch=False),
]
comparison_train_cfg = dict(max_iters=400, val_interval=400)
comparison_default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=400, max_keep_ckpts=1, save_best=None),
    visualization=dict(interval=6))  # with --show-dir: draw every 6th test image
comparison_env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
# DA-VPT(+): the class-to-prompt mapping re-clustered every "epoch" (200 images / batch 8 = 25
# iterations; the ViT-L configs: 1263), its first build reading at most 25 batches.
comparison_davpt_custom_hooks = [
    dict(type='ClassPromptMappingHook', interval=25, init_max_iters=25,
         init_images_per_class=10)
]
comparison_randomness = dict(seed=0)  # the harness sets each run's seed
