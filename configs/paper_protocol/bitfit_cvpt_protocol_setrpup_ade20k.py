# BitFit, the bias-tuning row of VPT's ADE20K table (43.40 / 45.33 mIoU), under CVPT's protocol
# exactly as its VPT-Deep baseline (vpt10_cvpt_protocol_setrpup_ade20k.py): SETR-PUP, SGD, on a
# frozen ViT-L/16 (ImageNet-21k): ADE20K (150 classes), crop 512, 160k iterations, total batch 16.
# Recipe sources (file:line of the official code; docs/methods.md, "The papers' protocol" and
# "BitFit"):
# - model: SETR-PUP decode head and three auxiliary SETR-PUP heads (_base_/setr_pup_vitl.py);
# - method: BitFit, a delta on every bias tensor of the trunk the backbone runs (271,360
#   values; the final norm is not run, final_norm=False), in place of VPT-Deep's 10 prompts per
#   block; no prompts, so no prompt dropout. Not tuned further than VPT-Deep: the same
#   optimizer, schedule and trunk dropout;
# - optimizer: SGD lr 1e-3, momentum 0.9, no weight decay, heads at 10x, poly to 1e-4
#   (_base_/sgd_160k.py);
# - input normalisation: ImageNet mean/std, as both papers' code (_base_/setr_pup_vitl.py).
_base_ = [
    './_base_/setr_pup_vitl.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', './_base_/sgd_160k.py'
]
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='FrozenViT',
        parts=[dict(type='BitFit')],
        # as the VPT-Deep row under CVPT's protocol: CVPT's code trains its frozen trunk in
        # train mode with drop_rate=0.1 (config.py:16), timm's pos_drop_rate and proj_drop_rate
        trunk_train_mode=True,
        model_kwargs=dict(pos_drop_rate=0.1, proj_drop_rate=0.1),
        img_size=512))
