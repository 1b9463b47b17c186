# Prompt comparison, head-only arm (linear probing; docs/comparison.md): the VPT-Deep arm with no
# prompt in any block, so the frozen trunk runs unchanged and only the linear head trains.
_base_ = ['./vpt_tiny_hue_pairs.py']
comparison_label = 'head-only (linear probe)'  # its row in tools/compare_methods.py's tables
comparison_order = 10  # its place among the arms (ascending)
model = dict(backbone=dict(num_prompts=0))
