# Prompt comparison, CVPT arm with 10 prompts (docs/comparison.md): configs/cvpt_vitl_ade20k.py
# on the tiny pretrained trunk and the hue-pairs task, with the shared settings (_hue_pairs.py).
# Method hyperparameters, all inherited from the ViT-L config: 10 cross-attention prompts per
# block, prompt dropout 0.1, cross-attention output dropout 0.1, the self-attention's weights
# reused for the cross-attention.
_base_ = ['../../cvpt_vitl_ade20k.py', './_hue_pairs.py']
comparison_label = 'CVPT, 10 prompts'  # its row in tools/compare_methods.py's tables
comparison_order = 30  # its place among the arms (ascending)
model = {{_base_.comparison_model}}
train_dataloader = {{_base_.comparison_train_dataloader}}
val_dataloader = {{_base_.comparison_val_dataloader}}
test_dataloader = val_dataloader
tta_pipeline_0x = {{_base_.comparison_tta_pipeline_0x}}
optim_wrapper = {{_base_.comparison_optim_wrapper}}
param_scheduler = {{_base_.comparison_param_scheduler}}
train_cfg = {{_base_.comparison_train_cfg}}
default_hooks = {{_base_.comparison_default_hooks}}
env_cfg = {{_base_.comparison_env_cfg}}
randomness = {{_base_.comparison_randomness}}
