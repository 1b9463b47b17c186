# Linear probe of a frozen DINOv3 ViT-L/16 (LVD-1689M): PASCAL Context 59, crop 480, 40k
# iterations, total batch 16. DINOv3 publishes no PASCAL Context protocol: this is its ADE20K
# one (configs/dinov3/linear_vitl_ade20k.py, where each choice's source is cited with its line)
# on this project's PASCAL Context 59 data (mmseg's: scale (520, 520), crop 480, test slide 480,
# stride 320).
# Recipe sources:
# - trunk: vit_large_patch16_dinov3 at img_size 512; a 480 crop is a 30 x 30 grid.
# - head: dropout 0.1, BN, 1x1 conv on the last block's patch tokens after the final norm
#   (DINOv3's LinearHead and config-ade20k-linear-training.yaml). No prompts, no adapter: only
#   the head trains.
# - optimizer: AdamW lr 1e-3, weight decay 1e-3, 1500 warm-up iterations then cosine to 0, 40k
#   iterations, batch 16: the ADE20K config's, unchanged.
# - input normalisation: ImageNet mean/std on the 0-255 scale (DINOv3's DEFAULT_MEAN/STD).
_base_ = [
    '../_base_/models/linear_frozen_vitl.py', '../_base_/datasets/pascal_context_59.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_linear_40k.py',
    '../_base_/trunks/dinov3_vitl16.py'
]
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
crop_size = (480, 480)
model = dict(
    data_preprocessor=dict(size=crop_size),  # normalisation: the base's, DINOv3's (above)
    backbone={{_base_.dinov3_trunk}},
    decode_head=dict(dropout_ratio=0.1, num_classes=59),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(320, 320)))
optim_wrapper = dict(optimizer=dict(weight_decay=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='CosineAnnealingLR', eta_min=0.0, begin=1500, end=40000, T_max=38500,
         by_epoch=False),
]
