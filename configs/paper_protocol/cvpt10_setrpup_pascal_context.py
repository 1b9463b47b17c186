# CVPT, 10 prompts, the papers' protocol (SETR-PUP, SGD) on a frozen ViT-L/16 (ImageNet-21k):
# PASCAL Context 59, crop 480, 80k iterations, total batch 16.
# Recipe sources (file:line of the official code; docs/methods.md, "The papers' protocol", says
# where a paper and its code differ and which we chose):
# - model: SETR-PUP decode head and three auxiliary SETR-PUP heads (_base_/setr_pup_vitl.py);
# - prompts: CVPT, 10 prompts per block (config.py:20), prompt dropout 0.1 (config.py:21),
#   cross-attention with the block's own frozen weights (the paper; see docs/methods.md);
# - optimizer: SGD lr 1e-3, momentum 0.9, no weight decay, heads at 10x, poly to 1e-4
#   (_base_/sgd_80k.py);
# - input normalisation: ImageNet mean/std, as both papers' code (_base_/setr_pup_vitl.py).
_base_ = [
    './_base_/setr_pup_vitl_pascal_context.py', '../_base_/datasets/pascal_context_59.py',
    '../_base_/default_runtime.py', './_base_/sgd_80k.py'
]
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
crop_size = (480, 480)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='CVPTViT',
        num_prompts=10,  # config.py:20, the released config
        prompt_dropout=0.1,  # config.py:21
        cross_proj_drop=0.1,
        # CVPT's code trains its frozen trunk in train mode with drop_rate=0.1 (config.py:16;
        # mmseg 0.x's ViT: dropout after the position embedding and in every attention output
        # and MLP), timm's pos_drop_rate and proj_drop_rate
        trunk_train_mode=True,
        model_kwargs=dict(pos_drop_rate=0.1, proj_drop_rate=0.1),
        img_size=480))
