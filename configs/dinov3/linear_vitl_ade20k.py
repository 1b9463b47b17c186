# Linear probe of a frozen DINOv3 ViT-L/16 (LVD-1689M): ADE20K (150 classes), crop 512, 40k
# iterations, total batch 16. DINOv3's protocol (dinov3/eval/segmentation/configs/
# config-ade20k-linear-training.yaml); published: 54.9 mIoU (DINOv3 MODEL_CARD.md, ViT-L/16).
# Recipe sources: facebookresearch/dinov3 at commit 6876159 ("yaml": the config above).
# - trunk: vit_large_patch16_dinov3 at img_size 512, a 32 x 32 grid (_base_/trunks/
#   dinov3_vitl16.py).
# - head: dropout 0.1, BN, 1x1 conv on the last block's patch tokens after the final norm
#   (yaml lines 31-37: `backbone_out_layers: LAST`, `use_batchnorm`, `use_backbone_norm`;
#   dinov3/eval/segmentation/models/heads/linear_head.py, lines 29-33 and 80-86; dropout 0.1
#   from dinov3/eval/segmentation/config.py, line 66); _base_/models/linear_frozen_vitl.py.
#   No prompts, no adapter: only the head trains.
# - optimizer: AdamW lr 1e-3, betas (0.9, 0.999), weight decay 1e-3, no gradient clipping (yaml
#   lines 18-23), 40k iterations, batch 2 x 8 GPUs (yaml lines 3-8). Schedule: 1500 warm-up
#   iterations from 1e-6 x lr, then cosine to 0 (yaml lines 9-15, WarmupOneCycleLR in
#   dinov3/eval/segmentation/schedulers.py). DINOv3's cosine runs over all 40k iterations from
#   iteration 0 (at 1500 it is at 99.6%) and its warm-up is scaled by (1 - t / 40k); mmengine's
#   LinearLR then CosineAnnealingLR from 1500 differ from it by at most 3.8% of the peak lr.
# - data: scale (2048, 512) (DINOv3: short side 512) with ratio 0.5-2, crop 512, flip 0.5,
#   photometric distortion (yaml lines 38-45); test slide 512, stride 341 (yaml lines 46-51).
# - input normalisation: ImageNet mean/std on the 0-255 scale (dinov3/eval/segmentation/
#   config.py, lines 18-19).
_base_ = [
    '../_base_/models/linear_frozen_vitl.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_linear_40k.py',
    '../_base_/trunks/dinov3_vitl16.py'
]
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),  # normalisation: the base's, DINOv3's (above)
    backbone={{_base_.dinov3_trunk}},
    decode_head=dict(dropout_ratio=0.1, num_classes=150))
optim_wrapper = dict(optimizer=dict(weight_decay=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='CosineAnnealingLR', eta_min=0.0, begin=1500, end=40000, T_max=38500,
         by_epoch=False),
]
