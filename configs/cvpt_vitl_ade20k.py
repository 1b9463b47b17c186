# CVPT cross-attention prompts (ICCV 2025) on a frozen ViT-L/16 (ImageNet-21k) with UperNet:
# ADE20K (150 classes), crop 512, 160k iterations, total batch 16.
# Recipe sources:
# - prompts: CVPT's released segmentation config: 10 prompts per block (its best ADE20K result
#   used 200), prompt dropout 0.1 and cross-attention output-projection dropout 0.1.
# - optimizer: AdamW lr 1e-4, weight decay 0.05 (none on prompts), poly after a 1500-iteration
#   warm-up (see _base_/schedules/schedule_160k.py for where it comes from).
# - input normalisation: mean = std = 127.5, matching the jx_vit_large_p16_384 weights
#   (_base_/models/upernet_vitl_prompt.py).
_base_ = [
    './_base_/models/upernet_vitl_prompt.py', './_base_/datasets/ade20k.py',
    './_base_/default_runtime.py', './_base_/schedules/schedule_160k.py'
]
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='CVPTViT',
        num_prompts=10,
        prompt_dropout=0.1,
        cross_proj_drop=0.1,
        img_size=512),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150),)
