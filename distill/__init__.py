"""Distillation of a teacher BERT into small students from token shards.

The commands: `python -m distill.train` (train.py, light; the loop itself is loop.py) and
`python -m distill.evaluate` (evaluate.py, light; scoring.py and finetune.py do the work), with
their options, the saved TrainConfig and the output-directory policy in options.py (no torch,
so --help is fast). The parts: configs (students, objectives, the declarative DistillConfig),
losses (the loss registry: pure vectorised functions), masking (fixed-shape MLM masking), data
(the resumable shard loader), models (teacher, student, Q/K/V capture hooks), attention (who
attends to whom in a packed row: --attention-scope), recipes (each objective's reference
defaults and their sources; no torch), checkpoint, export, device (CUDA/DDP, XLA, CPU). Teachers'
and shards' tokenizers are read by tokenizer_training.loading. See docs/distill.md.
"""
