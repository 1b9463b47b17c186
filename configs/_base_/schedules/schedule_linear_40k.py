# 40k iterations, total batch 16: the linear probe's schedule in DINOv2's segmentation evaluation
# (its hosted linear configs, e.g. dinov2_vitl14_ade20k_linear_config.py beside the weights, which
# notebooks/semantic_segmentation.ipynb of facebookresearch/dinov2 loads: `runner max_iters=40000`,
# `optimizer`, `lr_config`; the protocol of the paper's section 7.4, Table 10): AdamW lr 1e-3,
# betas (0.9, 0.999), weight decay 1e-4 on every tuned tensor (the head's BatchNorm included:
# DINOv2's plain AdamW), no gradient clipping, a 1500-iteration linear warm-up from 1e-6 x lr,
# then poly (power 1) to 0. DINOv3's linear probe changes the
# weight decay, the decay's shape and adds dropout (configs/dinov3/linear_vitl_*.py).
# Only trainable parameters reach the optimizer (the head's; the trunk is frozen).
# mmseg-prompt's check hooks come from ../check_hooks.py (merged into default_hooks below).
_base_ = ['../check_hooks.py']
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='PromptOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=40000, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=10000, max_keep_ckpts=3,
                    save_best='mIoU',
                    # via <file>.tmp<pid> and a rename (mmseg_prompt/utils/atomic_checkpoint.py)
                    backend_args=dict(backend='atomic_local')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
auto_scale_lr = dict(enable=False, base_batch_size=16)
