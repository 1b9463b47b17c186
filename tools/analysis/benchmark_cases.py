# The cases of tools/analysis/benchmark_prompts.py (its default --cases): an mmengine config,
# read by mmseg_prompt/tooling/benchmark/cases.py, not a script. Each case is a name and the
# model.backbone options over FrozenViT that make it (docs/cost.md, "Cases"):
# - method: the case's key (results.json's `method`, what --methods selects); name: its name in
#   the tables and the plot;
# - backbone: the tuning parts as sub-configs ({}: the bare frozen trunk);
# - sweep: the key of `backbone` each --prompts value goes into (one case per value);
# - flags: the tool's part flags (--prompt-dropout, --cross-proj-drop, --fold) and the key of
#   `backbone` each goes into; the flags' defaults are the configs' values (0.1, 0.1, 'auto');
# - reference: the case this one is compared with at the same prompt count (the table's last
#   column, the ratios, the linear fit of its cost in the prompt count);
# - default=False: run only when --methods names it.
# A case with a part of your own: register it (a TuningPart, mmseg_prompt/models/backbones/
# tuning_part.py) in a module listed in `custom_imports`, and add its entry here.
cases = [
    dict(method='trunk', name='frozen trunk', backbone=dict()),
    dict(method='vpt', name='VPT-Deep',
         backbone=dict(prompts=dict(type='SequencePrompts')),
         sweep='prompts.num_prompts', flags=dict(prompt_dropout='prompts.dropout')),
    dict(method='cvpt', name='CVPT',
         backbone=dict(prompts=dict(type='CrossAttentionPrompts')),
         sweep='prompts.num_prompts',
         flags=dict(prompt_dropout='prompts.dropout', cross_proj_drop='prompts.proj_drop',
                    fold='prompts.fold'),
         reference='vpt'),
    # the adapters, as their configs train them (configs/lora_vitl_ade20k.py,
    # configs/adaptformer_vitl_ade20k.py, configs/bitfit_vitl_ade20k.py)
    dict(method='lora', name='LoRA, r=8',
         backbone=dict(parts=[dict(type='LoRA', rank=8, alpha=8, dropout=0.0,
                                   targets=('q', 'v'))]),
         default=False),
    dict(method='adaptformer', name='AdaptFormer',
         backbone=dict(parts=[dict(type='AdaptFormer', bottleneck=64, scale=0.1, dropout=0.1)]),
         default=False),
    dict(method='bitfit', name='BitFit',
         backbone=dict(parts=[dict(type='BitFit')]),
         default=False),
]
# the case the ratios "x the frozen trunk's forward + backward" and the operator table's "extra
# per block" are against
baseline = 'trunk'
