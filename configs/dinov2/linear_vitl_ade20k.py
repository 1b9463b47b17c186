# Linear probe ("lin.") of a frozen DINOv2 ViT-L/14 with registers: ADE20K (150 classes), crop
# 518, 40k iterations, total batch 16. The DINOv2 paper's protocol (section 7.4, Table 10: 47.7
# mIoU for ViT-L/14 without registers; no ADE20K number is published for the register model).
# Recipe sources: facebookresearch/dinov2 at commit b8931f7 and its hosted linear config.
# - trunk: vit_large_patch14_reg4_dinov2 at img_size 518, the pretraining grid
#   (_base_/trunks/dinov2_vitl14_reg4.py).
# - head: BN + 1x1 conv on the last block's patch tokens after the final norm, no dropout:
#   DINOv2's BNHead (dinov2/eval/segmentation/models/decode_heads/linear_head.py, lines 15-38,
#   86-90) in its linear configs (`in_index=[3]`, `dropout_ratio=0`); _base_/models/
#   linear_frozen_vitl.py. No prompts, no adapter: only the head trains.
# - optimizer: AdamW lr 1e-3, weight decay 1e-4, poly after a 1500-iteration warm-up, 40k
#   iterations, batch 2 x 8 GPUs (DINOv2's hosted dinov2_vitl14_ade20k_linear_config.py;
#   _base_/schedules/schedule_linear_40k.py).
# - data: ADE20K as mmseg's (and DINOv2's linear configs): scale (2048, 512), ratio 0.5-2, flip,
#   photometric distortion; but crop 518 where DINOv2 crops 512 and pads it (centred) to 518,
#   test images padded to a multiple of 14, and a sliding window of 518, stride 345 (DINOv2: 512,
#   341), so that the trunk sees whole patches (_base_/trunks/dinov2_vitl14_reg4.py says why).
# - input normalisation: ImageNet mean/std on the 0-255 scale (DINOv2's img_norm_cfg).
_base_ = [
    '../_base_/models/linear_frozen_vitl.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_linear_40k.py',
    '../_base_/trunks/dinov2_vitl14_reg4.py'
]
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
crop_size = {{_base_.dinov2_ade20k.crop_size}}
train_pipeline = {{_base_.dinov2_ade20k.train_pipeline}}
model = dict(
    data_preprocessor={{_base_.dinov2_ade20k.data_preprocessor}},
    backbone={{_base_.dinov2_trunk}},
    decode_head=dict(num_classes=150),
    test_cfg={{_base_.dinov2_ade20k.test_cfg}})
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
