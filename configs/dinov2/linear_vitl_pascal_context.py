# Linear probe ("lin.") of a frozen DINOv2 ViT-L/14 with registers: PASCAL Context 59, crop 476,
# 40k iterations, total batch 16. DINOv2 evaluates ADE20K, VOC 2012 and Cityscapes, not PASCAL
# Context: this is its ADE20K protocol (configs/dinov2/linear_vitl_ade20k.py) on this project's
# PASCAL Context 59 data (mmseg's: scale (520, 520), crop 480, test slide 480, stride 320) with
# crops of whole patches: crop 476 (34 x 34), test images padded to a multiple of 14, slide 476,
# stride 317 (_base_/trunks/dinov2_vitl14_reg4.py says why).
# Recipe sources:
# - trunk: vit_large_patch14_reg4_dinov2 at img_size 518, the pretraining grid
#   (_base_/trunks/dinov2_vitl14_reg4.py).
# - head: BN + 1x1 conv on the last block's patch tokens after the final norm, no dropout:
#   DINOv2's BNHead (dinov2/eval/segmentation/models/decode_heads/linear_head.py, lines 15-38,
#   86-90); _base_/models/linear_frozen_vitl.py. No prompts, no adapter: only the head trains.
# - optimizer: AdamW lr 1e-3, weight decay 1e-4, poly after a 1500-iteration warm-up, 40k
#   iterations, batch 16 (DINOv2's hosted linear configs; _base_/schedules/
#   schedule_linear_40k.py), the ADE20K protocol unchanged.
# - input normalisation: ImageNet mean/std on the 0-255 scale (DINOv2's img_norm_cfg).
_base_ = [
    '../_base_/models/linear_frozen_vitl.py', '../_base_/datasets/pascal_context_59.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_linear_40k.py',
    '../_base_/trunks/dinov2_vitl14_reg4.py'
]
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
crop_size = {{_base_.dinov2_pascal_context.crop_size}}
train_pipeline = {{_base_.dinov2_pascal_context.train_pipeline}}
model = dict(
    data_preprocessor={{_base_.dinov2_pascal_context.data_preprocessor}},
    backbone={{_base_.dinov2_trunk}},
    decode_head=dict(num_classes=59),
    test_cfg={{_base_.dinov2_pascal_context.test_cfg}})
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
