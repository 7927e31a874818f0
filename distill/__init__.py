"""Distillation of a teacher BERT into small students from token shards.

`python -m distill.train` (train.py) and `python -m distill.evaluate` (evaluate.py); the parts:
configs (students, objectives, the declarative config), losses (pure vectorised loss functions),
masking (fixed-shape 80/10/10 MLM masking), data (the resumable shard loader), models (teacher,
student, Q/K/V capture hooks), checkpoint, export, device (CUDA/DDP, XLA, CPU), finetune
(the sentiment downstream check). See docs/distill.md.
"""
