# CVPT with 200 prompts, the papers' protocol (SETR-PUP, SGD) on a frozen ViT-L/16
# (ImageNet-21k): ADE20K (150 classes), crop 512, 160k iterations, total batch 16.
# Recipe sources: cvpt10_setrpup_ade20k.py (each value with the file:line of CVPT's code), with
# 200 prompts per block: the paper's best ADE20K row (the released config has 10).
_base_ = ['./cvpt10_setrpup_ade20k.py']
model = dict(backbone=dict(num_prompts=200))
