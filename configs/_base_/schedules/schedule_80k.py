# 80k iterations, total batch 16. Recipe: AdamW lr 1e-4, weight decay 0.05, poly decay after a
# 1500-iteration linear warm-up: the recipe of frozen-trunk PEFT extensions on mmseg (Rein) with
# ViT-Adapter's ViT-L UperNet warm-up; the papers' SGD recipe (lr 1e-3) was for a SETR-PUP head.
# Only trainable parameters reach the optimizer; prompts get no weight decay (prompt_decay_mult).
# mmseg-prompt's check hooks come from ../check_hooks.py (merged into default_hooks below).
_base_ = ['../check_hooks.py']
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='PromptOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(prompt_decay_mult=0.0, norm_decay_mult=0.0),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=80000, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8000, max_keep_ckpts=3,
                    save_best='mIoU',
                    # via <file>.tmp<pid> and a rename (mmseg_prompt/utils/atomic_checkpoint.py)
                    backend_args=dict(backend='atomic_local')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
auto_scale_lr = dict(enable=False, base_batch_size=16)
