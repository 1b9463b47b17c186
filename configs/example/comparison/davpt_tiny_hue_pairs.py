# Prompt comparison, DA-VPT arm (docs/comparison.md): configs/davpt_vitl_ade20k.py on the tiny
# pretrained trunk and the hue-pairs task, with the shared settings (_hue_pairs.py).
# Method hyperparameters, inherited from the ViT-L config: 10 VPT-Deep prompts per block, 20
# guided prompts in the last block, prompt dropout 0.1, the metric loss of metric_cfg
# (beta 0.05, lambda 0.05, scale 5, alpha 32, delta 0.1). Changed for the schedule only: the
# class-to-prompt mapping is re-clustered every "epoch" (200 images / batch 8 = 25 iterations,
# the ViT-L config: 1263), its first build reads at most 25 batches.
_base_ = ['../../davpt_vitl_ade20k.py', './_hue_pairs.py']
comparison_label = 'DA-VPT'  # its row in tools/compare_methods.py's tables
comparison_order = 50  # its place among the arms (ascending)
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
custom_hooks = {{_base_.comparison_davpt_custom_hooks}}
