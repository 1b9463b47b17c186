# BitFit (a bias-tuning baseline: VPT's ADE20K table lists it beside VPT-Deep) on a frozen
# ViT-L/16 (ImageNet-21k) with UperNet: ADE20K (150 classes), crop 512, 160k iterations, total
# batch 16.
# Recipe sources:
# - BitFit (Ben Zaken et al., 2022): a zero-initialised delta on every bias tensor of the trunk
#   the backbone runs (each block's LayerNorms, q/k/v, projection and MLP Linears, the patch
#   embedding), added to each module's output and merged into the biases on export; the final
#   norm is not run here (final_norm=False), so its bias is not tuned (docs/methods.md,
#   "BitFit"). 271,360 tuned trunk parameters, against 245,760 for 10 prompts per block.
# - optimizer: the prompt configs' recipe, unchanged: AdamW lr 1e-4, weight decay 0.05 (none on
#   the bias deltas, as on prompts: BitFit.no_decay_parameters), poly after a 1500-iteration
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
        type='FrozenViT',
        parts=[dict(type='BitFit')],
        img_size=512),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150),)
