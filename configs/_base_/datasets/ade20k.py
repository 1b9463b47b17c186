# ADE20K (150 classes), as mmseg's `_base_/datasets/ade20k.py`: crop 512, test scale (2048, 512),
# plus a label check and the two multi-scale test pipelines (see `tta_pipeline_0x`).
dataset_type = 'ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)
test_scale = (2048, 512)
# CheckSegLabels, right after LoadAnnotations: each label is one channel, of its image's original
# size, with values within the classes; its class count comes from the model's heads (the tools
# fill it in, SegLabelCheckHook checks batches), so it is not written here.
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
    # annotations are loaded after Resize: metrics compare at the original size
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels'),
    dict(type='PackSegInputs')
]
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
flips = [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')]
# `--tta` (mmseg 1.x): the ratios scale the original image.
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale_factor=r, keep_ratio=True) for r in img_ratios],
                     flips, [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])
]
# `--tta --tta-style 0.x` (tools/test.py): the ratios scale the canonical test scale, as
# mmseg 0.x's MultiScaleFlipAug did; the papers' multi-scale numbers were made this way.
tta_pipeline_0x = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale=(int(test_scale[0] * r), int(test_scale[1] * r)),
                           keep_ratio=True) for r in img_ratios],
                     flips, [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])
]
train_dataloader = dict(
    batch_size=2,  # per GPU: 8 GPUs x 2 = the total batch of 16 the recipes use
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
