# DA-VPT+ (CVPR 2025) on a frozen ViT-L/16 (ImageNet-21k) with UperNet:
# PASCAL Context 59, crop 480, 80k iterations, total batch 16.
# configs/davpt_vitl_pascal_context.py (see it for every recipe source) plus DA-VPT+'s
# "efficient bias tuning": the K and V biases of every block's self-attention train, as an
# additive delta; the pretrained biases stay frozen (2 x 1024 values per block).
# Recipe sources (all inherited, unchanged):
# - prompts: 10 VPT-Deep prompts per block, 20 guided prompts in the last block, dropout 0.1;
# - metric loss and mapping: DA-VPT's code and paper, as in davpt_vitl_pascal_context.py;
# - optimizer: AdamW lr 1e-4, weight decay 0.05 (none on prompts and norms; the bias deltas
#   are decayed towards 0, i.e. towards the pretrained biases), poly after 1500 warm-up;
# - input normalisation: mean = std = 127.5, matching the jx_vit_large_p16_384 weights.
_base_ = ['./davpt_vitl_pascal_context.py']
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
model = dict(backbone=dict(bias_tuning=True))
