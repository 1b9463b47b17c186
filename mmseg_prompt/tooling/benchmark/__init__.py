"""The cost benchmark's parts (``tools/analysis/benchmark_prompts.py``; docs/cost.md), one job
each: the cases (``cases.py``: a case file's backbone configs, built from the registry), what a
step is (``steps.py``), timing one case (``timing.py``), counting its operators
(``op_counts.py``; FLOPs: ``tooling/flops.py``) and the report (``report.py``)."""
