# AdaptFormer (an adapter baseline the prompt papers compare with) on a frozen ViT-L/16
# (ImageNet-21k) with UperNet: PASCAL Context 59, crop 480, 80k iterations, total batch 16.
# Recipe sources:
# - AdaptFormer: the official code's parallel adapter beside every block's MLP, bottleneck 64,
#   scale 0.1, dropout 0.1, no adapter LayerNorm, up-projection initialised to zero
#   (docs/methods.md, "AdaptFormer"). 3,171,840 tuned trunk parameters, against 245,760 for 10
#   prompts per block.
# - optimizer: the prompt configs' recipe, unchanged: AdamW lr 1e-4, weight decay 0.05 (the
#   adapters decay; prompts, which this config has none of, would not), poly after a
#   1500-iteration warm-up (see _base_/schedules/schedule_80k.py for where it comes from).
# - input normalisation: mean = std = 127.5, matching the jx_vit_large_p16_384 weights
#   (_base_/models/upernet_vitl_prompt.py).
_base_ = [
    './_base_/models/upernet_vitl_prompt.py', './_base_/datasets/pascal_context_59.py',
    './_base_/default_runtime.py', './_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
crop_size = (480, 480)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='FrozenViT',
        parts=[dict(type='AdaptFormer', bottleneck=64, scale=0.1, dropout=0.1)],
        img_size=480),
    decode_head=dict(num_classes=59),
    auxiliary_head=dict(num_classes=59),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(320, 320)))
