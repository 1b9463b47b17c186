# CVPT+ on a frozen ViT-L/16 (ImageNet-21k) with UperNet: ADE20K (150 classes), crop 512, 160k
# iterations, total batch 16. configs/cvpt_vitl_ade20k.py (see it for every recipe source) plus
# DA-VPT+'s K/V bias deltas (2 x 1024 values per block, added to the frozen biases of each block's
# self-attention; docs/methods.md, "Composition"). Neither paper trains this combination: the two
# parts do not depend on each other, so it is one configuration key.
# Recipe sources: prompts (10 per block, dropouts 0.1) and input normalisation (mean = std =
# 127.5) as configs/cvpt_vitl_ade20k.py;
# - optimizer: as CVPT's (AdamW lr 1e-4, weight decay 0.05, none on prompts); the bias deltas are
#   decayed towards 0, i.e. towards the pretrained biases, as in configs/davpt_plus_vitl_ade20k.py.
_base_ = ['./cvpt_vitl_ade20k.py']
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
model = dict(backbone=dict(bias_tuning=True))
