# DA-VPT+, the papers' protocol (SETR-PUP, SGD) on a frozen ViT-L/16 (ImageNet-21k):
# PASCAL Context 59, crop 480, 80k iterations, total batch 16.
# Recipe sources: davpt_setrpup_pascal_context.py (DA-VPT, each value with the file:line of the
# official code), plus trained deltas on every block's key and value bias (DA-VPT+: params.py:68-69,
# create.py:159-162 of DA-VPT's code).
_base_ = ['./davpt_setrpup_pascal_context.py']
model = dict(backbone=dict(bias_tuning=True))
