# _base_/sgd_160k.py for 80k iterations (PASCAL Context: neither paper's code has a config; the
# 80k of mmseg's PASCAL Context schedules, docs/methods.md), validation and checkpoints every 8k.
_base_ = ['./sgd_160k.py']
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False),
]
train_cfg = dict(max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
