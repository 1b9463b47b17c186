# The papers' schedule: SGD lr 1e-3, momentum 0.9, no weight decay, the heads at 10x the learning
# rate, poly decay (power 0.9) to 1e-4 without warm-up: CVPT config.py:199-209 (160k) and
# DA-VPT setrpup_base_ade.py:65-69 with _base_/schedules/schedule_160k.py:2-25. 80k
# iterations (PASCAL Context: neither code has a config; the 80k of
# mmseg's PASCAL Context schedules, docs/methods.md), total batch 16 (2 per GPU on 8 GPUs).
# Only trainable parameters reach the optimizer (PromptOptimWrapperConstructor).
_base_ = ['../../_base_/check_hooks.py']
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='PromptOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0),
    paramwise_cfg=dict(custom_keys=dict(head=dict(lr_mult=10.0))),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8000, max_keep_ckpts=3,
                    backend_args=dict(backend='atomic_local')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
auto_scale_lr = dict(enable=False, base_batch_size=16)
