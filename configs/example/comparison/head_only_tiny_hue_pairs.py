# Prompt comparison, head-only arm (linear probing; docs/comparison.md): the VPT-Deep arm with no
# prompt in any block, so the frozen trunk runs unchanged and only the linear head trains.
_base_ = ['./vpt_tiny_hue_pairs.py']
model = dict(backbone=dict(num_prompts=0))
