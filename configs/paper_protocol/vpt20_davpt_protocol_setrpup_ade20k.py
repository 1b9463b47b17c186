# VPT-Deep, 20 prompts, as DA-VPT's baseline,
# the papers' protocol (SETR-PUP, SGD) on a frozen ViT-L/16 (ImageNet-21k):
# ADE20K (150 classes), crop 512, 160k iterations, total batch 16.
# Recipe sources (file:line of the official code; docs/methods.md, "The papers' protocol", says
# where a paper and its code differ and which we chose):
# - model: SETR-PUP decode head and three auxiliary SETR-PUP heads (_base_/setr_pup_vitl.py);
# - prompts: VPT-Deep, 20 prompts per block, no prompt dropout, under DA-VPT's protocol
#   (models/vit.py:287-289);
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
        type='VPTDeepViT',
        num_prompts=20,  # DA-VPT's prompt count (models/vit.py:289)
        prompt_dropout=0.0,  # models/vit.py:287
        # DA-VPT's config turns the trunk's dropout off (setrpup_base_ade.py:14, drop_rate=0.)
        img_size=512))
