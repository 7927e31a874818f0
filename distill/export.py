"""Export the student as a plain Hugging Face model directory.

DIR/student/ holds config.json, model.safetensors and the shards' tokenizer files (exactly the
four of tokenizer_training.loading's normal form: whatever else a shards' tokenizer/ holds, weights
of a teacher included, never reaches the student), so that
`AutoModel.from_pretrained`, `AutoModelForMaskedLM.from_pretrained` and
`AutoTokenizer.from_pretrained` all load it. The config carries no runtime flags
(output_attentions, return_dict, ...): the seeds' KoMiniLM configs shipped
`output_attentions: true, return_dict: false`, which silently changes what every user's
forward() returns. The directory appears atomically (built beside, then renamed).

See docs/distill.md, "Outputs".
"""
from __future__ import annotations

import copy
import shutil
import uuid
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM

from distill.configs import RUNTIME_FLAGS


def export_student(student: BertForMaskedLM, tokenizer_files: dict[str, bytes], out_dir: Path) -> Path:
    """Write the student (fp32, on the CPU) and the tokenizer files (name -> bytes) to out_dir, replacing it."""
    config = copy.deepcopy(student.config)
    defaults = BertConfig()
    for flag in RUNTIME_FLAGS:
        if hasattr(defaults, flag):
            setattr(config, flag, getattr(defaults, flag))
    config.architectures = ["BertForMaskedLM"]
    exported = BertForMaskedLM(config)
    state = {name: tensor.detach().to("cpu", torch.float32) for name, tensor in student.state_dict().items()}
    exported.load_state_dict(state)
    temp = out_dir.parent / f".tmp-{out_dir.name}-{uuid.uuid4().hex}"
    try:
        exported.save_pretrained(temp)
        for name, data in sorted(tokenizer_files.items()):
            (temp / name).write_bytes(data)
        if out_dir.exists():
            old = out_dir.parent / f".old-{out_dir.name}-{uuid.uuid4().hex}"
            out_dir.rename(old)
            shutil.rmtree(old)
        temp.rename(out_dir)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return out_dir
