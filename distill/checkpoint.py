"""Training checkpoints: atomic, checksummed, the newest `keep` kept.

A checkpoint is a directory `checkpoints/step-NNNNNNNNN/` with `model.safetensors` (the
trainable module's weights) and `state.pt` (optimizer, RNG states, loader position, step,
config: tensors and plain containers only, read back with `torch.load(weights_only=True)`),
and, written last, `COMPLETE.json` with the sha256 of both files. It is assembled under a
temporary name and renamed into place, so a crash leaves either the whole checkpoint or none;
a checkpoint damaged later (truncated copy, bad disk) fails its checksums and the previous one
is used instead.

See docs/distill.md, "Outputs".
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from transforms.storage import file_sha256

MARKER = "COMPLETE.json"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
STEP_DIR = re.compile(r"^step-(\d+)$")


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def to_cpu(value):
    """The same nested dicts/lists/tuples with every tensor copied to the CPU."""
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(item) for item in value)
    return value


def unique_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state on the CPU, each tied tensor once (under its first name). Ties are
    found by object identity, which works on every device (CUDA, XLA) unlike storage pointers."""
    weights, seen = {}, set()
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            weights[name] = tensor.detach().cpu().contiguous()
    return weights


def save_checkpoint(root: Path, step: int, module: nn.Module, state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` under root atomically, then delete all but the newest `keep`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:09d}"
    temp = root / f".tmp-{final.name}-{uuid.uuid4().hex}"
    temp.mkdir()
    try:
        save_file(unique_weights(module), str(temp / WEIGHTS), metadata={"format": "pt"})
        torch.save(to_cpu(state), temp / STATE)
        for name in (WEIGHTS, STATE):
            with open(temp / name, "rb") as handle:
                os.fsync(handle.fileno())
        marker = {"step": step, "sha256": {name: file_sha256(temp / name) for name in (WEIGHTS, STATE)}}
        with open(temp / MARKER, "w", encoding="utf-8") as handle:
            json.dump(marker, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(temp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    for stale in step_dirs(root)[:-keep]:
        shutil.rmtree(stale)
    return final


def step_dirs(root: Path) -> list[Path]:
    """Checkpoint directories under root, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [path for _, path in sorted(found)]


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint cannot be used, or None when it is complete and intact."""
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
        expected = marker["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {MARKER} (the save did not finish)"
    for name in (WEIGHTS, STATE):
        if not (path / name).is_file():
            return f"{name} is missing"
        if file_sha256(path / name) != expected.get(name):
            return f"{name} does not match its checksum (truncated or corrupt)"
    return None


def latest_checkpoint(root: Path) -> Path | None:
    """The newest intact checkpoint; damaged newer ones are reported on stderr and skipped."""
    for path in reversed(step_dirs(root)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        print(f"distill.train: skipping checkpoint {path}: {problem}", file=sys.stderr)
    return None


def load_checkpoint(path: Path, module: nn.Module) -> dict:
    """Load the weights into module and return the training state (on the CPU). Every weight must
    be in the file, tied ones under their first name."""
    weights = load_file(str(path / WEIGHTS))
    expected = unique_weights(module).keys()
    if weights.keys() != expected:
        raise ValueError(
            f"{path / WEIGHTS} does not fit the model: missing {sorted(expected - weights.keys())[:5]}, "
            f"unexpected {sorted(weights.keys() - expected)[:5]}"
        )
    module.load_state_dict(weights, strict=False)
    return torch.load(path / STATE, map_location="cpu", weights_only=True)
