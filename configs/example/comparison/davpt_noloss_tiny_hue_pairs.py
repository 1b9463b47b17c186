# Prompt comparison, DA-VPT with its metric loss switched off (docs/comparison.md): the DA-VPT arm
# (configs/davpt_vitl_ade20k.py through davpt_tiny_hue_pairs.py) with both loss weights 0, so
# that everything else stays DA-VPT's: 10 VPT-Deep prompts per block, 20 guided prompts in the
# last block, prompt dropout 0.1, the segmentor, the class-to-prompt mapping hook and the
# schedule. Set against the DA-VPT arm, it measures what the metric loss does; set against
# VPT-Deep, what the 20-prompt layout of the last block does. A weight of 0 skips its term (no
# patch sampling, no random draw), so this arm trains exactly as VPT-Deep with prompts
# (10, 10, 10, 20) would (tests/test_compare_methods.py).
_base_ = ['./davpt_tiny_hue_pairs.py']
comparison_label = 'DA-VPT, metric loss off'  # its row in tools/compare_methods.py's tables
comparison_order = 60  # its place among the arms (ascending)
model = dict(metric_cfg=dict(beta=0.0, lambda_cls=0.0))
