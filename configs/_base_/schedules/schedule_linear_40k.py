# 40k iterations, total batch 16: the linear probe's schedule in DINOv2's segmentation evaluation
# (its hosted linear configs, e.g. dinov2_vitl14_ade20k_linear_config.py beside the weights, which
# notebooks/semantic_segmentation.ipynb of facebookresearch/dinov2 loads: `runner max_iters=40000`,
# `optimizer`, `lr_config`; the protocol of the paper's section 7.4, Table 10): AdamW lr 1e-3,
# betas (0.9, 0.999), weight decay 1e-4 on every tuned tensor (the head's BatchNorm included:
# DINOv2's plain AdamW), no gradient clipping, a 1500-iteration linear warm-up from 1e-6 x lr,
# then poly (power 1) to 0. DINOv3's linear probe changes the
# weight decay, the decay's shape and adds dropout (configs/dinov3/linear_vitl_*.py).
# Only trainable parameters reach the optimizer (the head's; the trunk is frozen).
# The loops, hooks and checkpointing are schedule_160k.py's; what differs is set here.
_base_ = ['./schedule_160k.py']
optim_wrapper = dict(
    _delete_=True,  # no paramwise_cfg: the head's BatchNorm takes the weight decay too
    type='OptimWrapper',
    constructor='PromptOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=40000, by_epoch=False),
]
train_cfg = dict(max_iters=40000, val_interval=10000)
default_hooks = dict(checkpoint=dict(interval=10000))
