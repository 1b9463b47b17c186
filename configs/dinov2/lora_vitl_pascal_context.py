# LoRA (an adapter baseline the prompt papers compare with) on a frozen DINOv2 ViT-L/14 with
# registers (LVD-142M) with UperNet: PASCAL Context 59, crop 476, 80k iterations, total batch 16.
# configs/lora_vitl_pascal_context.py with the trunk, its input normalisation and the crops swapped
# (crops of whole 14-pixel patches); features of blocks 7, 11, 15, 23 into Feature2Pyramid and
# UPerHead, as there.
# Recipe sources:
# - trunk: vit_large_patch14_reg4_dinov2 at img_size 518, the pretraining grid; Meta's
#   dinov2_vitl14_reg4_pretrain.pth (_base_/trunks/dinov2_vitl14_reg4.py).
# - prompts: none; LoRA rank 8, alpha 8, on the query and value thirds of every block's qkv:
#   inherited unchanged from configs/lora_vitl_pascal_context.py (see it for their sources).
# - optimizer: inherited: AdamW lr 1e-4, weight decay 0.05 (none on prompts and norms), poly after a
#   1500-iteration warm-up (_base_/schedules/schedule_80k.py); the DINO papers publish no prompt or
#   adapter recipe, so the ImageNet-21k configs' one is kept for a like-for-like comparison across
#   trunks.
# - input normalisation: ImageNet mean/std on the 0-255 scale, the DINOv2 evaluations' img_norm_cfg
#   (_base_/trunks/dinov2_vitl14_reg4.py), instead of the ImageNet-21k weights' 127.5.
# - data: the ImageNet-21k config's, with crop 476 (34 x 34), test images padded to a multiple of 14
#   and a sliding window of the crop with 2/3 overlap (_base_/trunks/dinov2_vitl14_reg4.py says
#   why).
_base_ = ['../lora_vitl_pascal_context.py', '../_base_/trunks/dinov2_vitl14_reg4.py']
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
crop_size = {{_base_.dinov2_pascal_context.crop_size}}
train_pipeline = {{_base_.dinov2_pascal_context.train_pipeline}}
model = dict(
    data_preprocessor={{_base_.dinov2_pascal_context.data_preprocessor}},
    backbone={{_base_.dinov2_trunk}},
    test_cfg={{_base_.dinov2_pascal_context.test_cfg}})
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
