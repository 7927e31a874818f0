"""Where training runs: CUDA (one GPU, or several through torchrun + DDP), TPU (torch_xla), or the CPU.

torch_xla is imported only when asked for, or when it is installed and no GPU is. The
differences stay in this module: device and process group set-up, the autocast context, the
teacher's dtype, the gradient all-reduce across TPU replicas (xm.reduce_gradients; DDP does it
for GPUs), the step barrier XLA needs (torch_xla.sync), the RNG state saved in checkpoints, and
the per-step XLA counters of DISTILL_XLA_METRICS (StepMetrics; docs/tpu.md).

See docs/distill.md, "Devices".
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from distill.options import DEVICES, PRECISIONS  # noqa: F401  (the choices live where --help can read them)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Runtime:
    kind: str  # "cuda", "xla" or "cpu"
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def uses_ddp(self) -> bool:
        """torchrun processes share gradients through DDP; XLA replicas through xm.reduce_gradients."""
        return self.world_size > 1 and self.kind != "xla"


def xla_available() -> bool:
    return importlib.util.find_spec("torch_xla") is not None


def choose_device(requested: str) -> str:
    """auto: CUDA when torch sees a GPU, else XLA when torch_xla is installed, else the CPU."""
    if requested not in DEVICES:
        raise ValueError(f"--device must be one of {DEVICES}, got {requested!r}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "xla" if xla_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device")
    if requested == "xla" and not xla_available():
        raise ValueError("--device xla: torch_xla is not installed")
    return requested


def init_runtime(kind: str) -> Runtime:
    """Set up this process: its device, and the process group when torchrun started several."""
    if kind == "xla":
        import torch_xla
        import torch_xla.runtime as xr

        return Runtime("xla", torch_xla.device(), xr.global_ordinal(), xr.world_size(), xr.local_ordinal())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    return Runtime(kind, device, rank, world_size, local_rank)


def resolve_precision(requested: str, kind: str) -> str:
    """auto: bf16 on GPUs that have it and on TPU, fp32 on the CPU (and on older GPUs)."""
    if requested not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return requested
    if kind == "xla" or (kind == "cuda" and torch.cuda.is_bf16_supported()):
        return "bf16"
    return "fp32"


def autocast(runtime: Runtime, precision: str):
    """Mixed precision for the forward passes; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.kind, dtype=DTYPES[precision])


def reduce_gradients(optimizer: torch.optim.Optimizer, runtime: Runtime) -> None:
    """Average gradients over TPU replicas (before clipping, so that all clip the same gradient).
    Under DDP the backward pass has already done it."""
    if runtime.kind == "xla" and runtime.world_size > 1:
        import torch_xla.core.xla_model as xm

        xm.reduce_gradients(optimizer)


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def step_boundary(runtime: Runtime) -> None:
    """Cut and run the lazily built graph once per optimizer step on XLA (a no-op elsewhere)."""
    if runtime.kind == "xla":
        import torch_xla

        torch_xla.sync()


def reduce_sum(values: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum a tensor of logged values over processes (for logging steps only)."""
    if runtime.world_size == 1:
        return values
    if runtime.kind == "xla":
        import torch_xla.core.xla_model as xm

        return xm.all_reduce(xm.REDUCE_SUM, values)
    values = values.clone()
    dist.all_reduce(values)
    return values


def barrier(runtime: Runtime) -> None:
    if runtime.world_size == 1:
        return
    if runtime.kind == "xla":
        import torch_xla.core.xla_model as xm

        xm.rendezvous("distill")
    else:
        dist.barrier()


def rng_state(runtime: Runtime) -> dict:
    """The RNG state dropout draws from, as tensors (checkpoints load with weights_only=True)."""
    state = {"torch": torch.get_rng_state()}
    if runtime.kind == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(runtime.device)
    return state


def set_rng_state(state: dict, runtime: Runtime) -> None:
    torch.set_rng_state(state["torch"])
    if runtime.kind == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], runtime.device)


STEP_METRICS_ENV = "DISTILL_XLA_METRICS"
# torch_xla.debug.metrics names: each metric's sample count is how often it happened.
XLA_EVENTS = {"compiles": "CompileTime", "executions": "ExecuteTime", "to_host": "TransferFromDeviceTime"}


class StepMetrics:
    """What XLA did between two marks of the loop (graphs compiled, graphs executed, device-to-host
    transfers), one JSON line per mark appended to the file named by DISTILL_XLA_METRICS.

    Why: on a TPU a recompilation or a host read inside the step costs more than the step itself,
    and neither shows in the loss. A mark first waits for the device (execution is asynchronous,
    and counts only appear once it is done), so this is a diagnostic that slows training; unset,
    the loop pays one attribute lookup per mark. tests_xla/ and bench/bench_xla.py read the file.
    """

    def __init__(self, path: str | None, runtime: Runtime) -> None:
        self.path = path
        self.rank = runtime.rank
        self._last: dict[str, int] | None = None
        if path:
            self._last = self.counts()

    @classmethod
    def from_env(cls, runtime: Runtime) -> "StepMetrics":
        path = os.environ.get(STEP_METRICS_ENV) or None
        if path and runtime.kind != "xla":
            raise ValueError(f"{STEP_METRICS_ENV} counts XLA compilations and transfers: it applies to --device xla "
                             f"only (this run is on {runtime.kind}); unset it")
        return cls(path, runtime)

    @staticmethod
    def counts() -> dict[str, int]:
        """The counters so far in this process, once the device has finished what was queued."""
        import torch_xla.core.xla_model as xm
        import torch_xla.debug.metrics as met

        xm.wait_device_ops()
        return {key: (met.metric_data(name) or (0,))[0] for key, name in XLA_EVENTS.items()}

    def mark(self, what: str, step: int) -> None:
        """Record what happened since the previous mark, as `what` ("step", "log", "save") at `step`."""
        if not self.path:
            return
        counts = self.counts()
        line = {"rank": self.rank, "step": step, "what": what, **{k: counts[k] - self._last[k] for k in counts}}
        self._last = counts
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
