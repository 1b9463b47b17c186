# AdaptFormer (an adapter baseline the prompt papers compare with) on a frozen DINOv3 ViT-L/16
# (LVD-1689M) with UperNet: PASCAL Context 59, crop 480, 80k iterations, total batch 16.
# configs/adaptformer_vitl_pascal_context.py with the trunk and its input normalisation swapped (two
# keys); features of blocks 7, 11, 15, 23 into Feature2Pyramid and UPerHead, as there.
# Recipe sources:
# - trunk: vit_large_patch16_dinov3 (RoPE, 4 registers, no q/k/v biases) at img_size 512; Meta's
#   dinov3_vitl16_pretrain_lvd1689m file (_base_/trunks/dinov3_vitl16.py).
# - prompts: none; AdaptFormer beside every block's MLP, bottleneck 64, scale 0.1, dropout 0.1:
#   inherited unchanged from configs/adaptformer_vitl_pascal_context.py (see it for their sources).
# - optimizer: inherited: AdamW lr 1e-4, weight decay 0.05 (none on prompts and norms), poly after a
#   1500-iteration warm-up (_base_/schedules/schedule_80k.py); the DINO papers publish no prompt or
#   adapter recipe, so the ImageNet-21k configs' one is kept for a like-for-like comparison across
#   trunks.
# - input normalisation: ImageNet mean/std on the 0-255 scale, DINOv3's segmentation evaluation's
#   (dinov3/eval/segmentation/config.py, DEFAULT_MEAN / DEFAULT_STD, lines 18-19), instead of the
#   ImageNet-21k weights' 127.5.
_base_ = ['../adaptformer_vitl_pascal_context.py', '../_base_/trunks/dinov3_vitl16.py']
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
model = dict(
    data_preprocessor={{_base_.dinov3_normalisation}},
    backbone={{_base_.dinov3_trunk}})
