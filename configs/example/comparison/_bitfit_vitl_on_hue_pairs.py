# configs/bitfit_vitl_ade20k.py on the tiny pretrained trunk and the hue-pairs task, with the
# settings every arm shares (_hue_pairs.py); bitfit_tiny_hue_pairs.py is the arm.
_base_ = ['../../bitfit_vitl_ade20k.py', './_hue_pairs.py']
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
