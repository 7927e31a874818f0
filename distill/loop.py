"""The training loop of `python -m distill.train`: set-up, then restore / step / log / checkpoint.

`run(args)` picks the device (and starts one process per TPU device under XLA); `train` is
the loop, composed of small parts:

- `prepare`: shards, teacher, the declarative DistillConfig, the student and the loader;
- `restore`: the newest intact checkpoint's weights, optimizer, loader position and RNG into
  a `TrainState`, after checking that it was made by the same run (DistillConfig, world size,
  and the saved TrainConfig through `options.review_changes`);
- `train_step`: one optimizer step (gradient accumulation over micro-batches included);
- `log_metrics`: one metrics.jsonl line and a progress line;
- `save`: a checkpoint (distill.checkpoint); `finish`: the exported student.

A run with the same seed gives the same numbers whatever the number of loader workers and
however often it is interrupted and resumed (tests/test_distill_train.py). See docs/distill.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import BertForMaskedLM

from distill import device as devices
from distill import options
from distill.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from distill.configs import PRESET_INIT_LAYERS, DistillConfig, objective_terms, parse_layer_map, parse_weights
from distill.configs import resolve_layer, student_config_dict, validate
from distill.data import BatchStream, ShardBatches, ShardDir, open_shard_dir, open_split
from distill.export import export_student
from distill.losses import Masks
from distill.masking import masking_spec
from distill.models import CapturingStudent, Teacher, check_vocabulary, init_from_teacher, load_teacher
from distill.models import model_vocabulary, quiet_transformers, term_losses
from pipeline import cli
from transforms.storage import write_bytes_atomic, write_json_atomic


@contextmanager
def usage_errors():
    """ValueErrors of the set-up (bad options, unusable shards or teacher) become usage errors (exit 2)."""
    try:
        yield
    except ValueError as error:  # includes TokenShardError and VocabularyMismatch
        raise cli.UsageError(str(error)) from error


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then linear decay to 0 at `total` (step is 0-based)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


# ---------------------------------------------------------------- set-up


def build_config(args: argparse.Namespace, teacher_config, shards: ShardDir) -> DistillConfig:
    """The declarative config from the command line."""
    if args.teacher_layer is not None and args.layer_map:
        raise ValueError("give --teacher-layer or --layer-map, not both")
    student = student_config_dict(args.student, teacher_config, len(shards.vocab), shards.special_ids["pad"])
    layer_map = parse_layer_map(args.layer_map) if args.layer_map else None
    if args.teacher_layer is not None:
        layer_map = [(args.teacher_layer, -1)]
    if args.init_from_teacher_layers:
        init = [int(x) for x in args.init_from_teacher_layers.split(",")]
    else:
        init = PRESET_INIT_LAYERS.get(args.student)
    terms = objective_terms(
        args.objective,
        teacher_config.num_hidden_layers,
        student["num_hidden_layers"],
        layer_map,
        args.relation_heads,
        args.temperature,
        parse_weights(args.loss_weights) if args.loss_weights else {},
    )
    return DistillConfig(
        objective=args.objective,
        student=student,
        terms=terms,
        init_from_teacher_layers=[resolve_layer(i, teacher_config.num_hidden_layers, "teacher") for i in init] if init else None,
        mlm_probability=args.mlm_probability,
        teacher_layers=teacher_config.num_hidden_layers,
        teacher_hidden_size=teacher_config.hidden_size,
    )


@dataclass
class Setup:
    """Everything the loop needs, built and checked before the first step."""

    config: DistillConfig
    shards: ShardDir
    teacher: Teacher | None
    model: CapturingStudent
    stream: BatchStream
    max_steps: int


def prepare(args: argparse.Namespace, runtime: devices.Runtime, precision: str) -> Setup:
    """Load and check shards and teacher, build the config, the student and the loader."""
    shards = open_shard_dir(args.shards)
    split = open_split(shards, "train")
    teacher_model, head_trained = load_teacher(args.teacher)
    check_vocabulary("the teacher", teacher_model.config.vocab_size, model_vocabulary(args.teacher), shards.vocab)
    config = build_config(args, teacher_model.config, shards)
    validate(config, teacher_model.config)
    if not head_trained and (config.needs_teacher_logits() or config.init_from_teacher_layers):
        raise ValueError(f"{args.teacher} has no trained MLM head, which the {args.objective} objective / initialisation needs")
    limit = min(teacher_model.config.max_position_embeddings, config.student["max_position_embeddings"])
    if shards.seq_len > limit:
        raise ValueError(f"the shards' sequences have {shards.seq_len} tokens, more than the {limit} positions of the models")

    torch.manual_seed(args.seed)  # the student's initialisation (and its projections) draw from here
    student = BertForMaskedLM._from_config(config.student_config(), attn_implementation="sdpa")
    if config.init_from_teacher_layers:
        init_from_teacher(student, teacher_model, config.init_from_teacher_layers)
    teacher = None
    if config.needs_teacher():
        teacher = Teacher(teacher_model, config).to(runtime.device, devices.DTYPES[precision])
    model = CapturingStudent(student, config).to(runtime.device)

    masking = masking_spec(shards.vocab, shards.special_ids, shards.seq_len, args.mlm_probability) \
        if config.needs_student_logits() or config.needs_teacher_logits() else None
    dataset = ShardBatches(
        split,
        args.batch_size,
        seed=args.seed,
        shuffle_buffer=args.shuffle_buffer,
        masking=masking,
        pad_id=shards.special_ids["pad"],
        rank=runtime.rank,
        world_size=runtime.world_size,
    )
    stream = BatchStream(dataset, num_workers=args.loader_workers, pin_memory=runtime.kind == "cuda")
    max_steps = args.max_steps or max(1, dataset.batches_per_epoch() // args.grad_accum)
    return Setup(config, shards, teacher, model, stream, max_steps)


def train_data_fingerprint(shards: ShardDir) -> str:
    """The train split's identity: the sha256 of its shard files' sha256s (from the verified manifest)."""
    entries = shards.manifest["splits"]["train"]["shards"]
    return hashlib.sha256("\n".join(entry["sha256"] for entry in entries).encode("ascii")).hexdigest()[:16]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and LayerNorm weights (group 0 decays, group 1 does not)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6)


@dataclass
class Run:
    """What stays fixed while the loop runs: options, models, optimizer, loader, where things go."""

    args: argparse.Namespace
    train: options.TrainConfig
    runtime: devices.Runtime
    setup: Setup
    optimizer: torch.optim.AdamW
    scaler: torch.amp.GradScaler | None
    weights: torch.Tensor  # each term's weight
    progress: cli.Progress
    wrapped: torch.nn.Module | None = None  # the model, or its DDP wrapper (set after restore)
    stop_at: int = 0  # this invocation's last step

    @property
    def output(self) -> Path:
        return Path(self.args.output)

    @property
    def checkpoints(self) -> Path:
        return self.output / "checkpoints"

    def say(self, line: str) -> None:
        """A progress line on the main process (none with --quiet)."""
        if self.runtime.is_main:
            self.progress.say(line)


def make_run(args: argparse.Namespace, runtime: devices.Runtime, precision: str, setup: Setup) -> Run:
    train = options.TrainConfig.from_args(args, precision=precision, max_steps=setup.max_steps,
                                          train_data=train_data_fingerprint(setup.shards))
    optimizer = make_optimizer(setup.model, args.lr, args.weight_decay)
    scaler = torch.amp.GradScaler(runtime.kind) if precision == "fp16" and runtime.kind != "xla" else None
    weights = torch.tensor([term.weight for term in setup.config.terms], device=runtime.device)
    return Run(args, train, runtime, setup, optimizer, scaler, weights, cli.Progress(options.TRAIN, not args.quiet))


# ---------------------------------------------------------------- state and restore


@dataclass
class TrainState:
    """What changes step by step (and is saved in every checkpoint)."""

    window: torch.Tensor  # since the last log step: summed loss, then each term
    step: int = 0
    elapsed: float = 0.0  # seconds trained before this invocation started its clock
    tokens: int = 0  # non-pad tokens of the logged steps, all ranks
    window_steps: int = 0
    window_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)  # the clock's zero: now - elapsed trained
    last_log: float = field(default_factory=time.perf_counter)

    def start_clock(self) -> None:
        now = time.perf_counter()
        self.started, self.last_log = now - self.elapsed, now


def restore(run: Run) -> TrainState:
    """A fresh TrainState, or with --resume the newest intact checkpoint's, loaded into the run."""
    fresh = TrainState(window=torch.zeros(len(run.setup.config.terms) + 1, device=run.runtime.device))
    path = latest_checkpoint(run.checkpoints) if run.args.resume else None
    if path is None:
        if run.args.resume:
            run.say(f"--resume: no intact checkpoint in {run.checkpoints}, starting from step 0")
        return fresh
    saved = load_checkpoint(path, run.setup.model)
    check_checkpoint(run, saved, path)
    run.optimizer.load_state_dict(saved["optimizer"])
    run.optimizer.param_groups[0]["weight_decay"] = run.args.weight_decay  # a changed --weight-decay applies
    if run.scaler is not None and "scaler" in saved:
        run.scaler.load_state_dict(saved["scaler"])
    run.setup.stream.load_state_dict(saved["loader"], strict=not run.args.allow_config_change)
    state = TrainState(window=saved["window"].to(run.runtime.device), step=saved["step"], elapsed=saved["elapsed"],
                       tokens=saved["tokens"], window_steps=saved["window_steps"], window_tokens=saved["window_tokens"])
    devices.set_rng_state(saved["rng"], run.runtime)
    run.say(f"resuming from {path} at step {state.step}")
    return state


def check_checkpoint(run: Run, saved: dict, path: Path) -> None:
    """Refuse a checkpoint of another model or world size; review the TrainConfig changes."""
    before, now = json.loads(saved["config"]), json.loads(run.setup.config.to_json())
    for config in (before, now):
        config.pop("mlm_probability", None)  # reviewed with the TrainConfig below (--allow-config-change)
    if before != now:
        keys = sorted(key for key in before.keys() | now.keys() if before.get(key) != now.get(key))
        raise ValueError(f"{path} was trained with another distillation config ({', '.join(keys)} differ); "
                         f"compare {run.output / 'distill_config.json'}")
    if saved["world_size"] != run.runtime.world_size:
        raise ValueError(f"{path} was written by {saved['world_size']} processes, this run has {run.runtime.world_size}")
    if "train_config" in saved:
        previous, where = json.loads(saved["train_config"]), f"the checkpoint {path.name}"
    else:  # a checkpoint from before TrainConfig was saved in it
        previous, where = options.read_json_file(str(run.output / "train_config.json")), "train_config.json"
    if previous is not None:
        report = options.say_stderr if run.runtime.is_main else (lambda line: None)
        options.review_changes(previous, run.train, run.args.allow_config_change, report, where)


def begin(run: Run, state: TrainState) -> None:
    """Write the configs (after --overwrite's removal), trim metrics to the restored step, say what runs."""
    setup, args = run.setup, run.args
    if run.runtime.is_main:
        if args.overwrite:
            options.remove_own_outputs(str(run.output))
        run.output.mkdir(parents=True, exist_ok=True)
        trim_metrics(run.output / "metrics.jsonl", state.step)
        write_json_atomic(str(run.output / "distill_config.json"), json.loads(setup.config.to_json()))
        write_json_atomic(str(run.output / "train_config.json"), run.train.to_dict())
        params = sum(p.numel() for p in setup.model.student.parameters()) / 1e6
        run.say(f"{args.objective} {args.student} ({params:.1f}M params) from {args.teacher} (running "
                f"{setup.config.teacher_depth()} of {setup.config.teacher_layers} layers) on {run.runtime.kind} "
                f"x{run.runtime.world_size}, {run.train.precision}, {setup.max_steps} steps")
    run.wrapped = setup.model
    if run.runtime.uses_ddp:
        ids = [run.runtime.local_rank] if run.runtime.kind == "cuda" else None
        run.wrapped = DistributedDataParallel(setup.model, device_ids=ids)
    run.stop_at = setup.max_steps if args.run_steps is None else min(setup.max_steps, state.step + args.run_steps)


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from (they will be logged again)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line)["step"] <= last_step]
    write_bytes_atomic(str(path), "".join(line + "\n" for line in kept).encode("utf-8"))


# ---------------------------------------------------------------- step, log, save


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in batch.items()}


def forward_backward(run: Run, batch: dict) -> torch.Tensor:
    """One micro-batch: both forward passes, the weighted loss, its backward; returns [loss, each term] (detached)."""
    setup, accum = run.setup, run.args.grad_accum
    student_heads = setup.model.student.config.num_attention_heads
    teacher_heads = setup.teacher.num_heads if setup.teacher else student_heads
    with devices.autocast(run.runtime, run.train.precision):
        positions = batch.get("positions")
        teacher_outputs = setup.teacher(batch["input_ids"], batch["attention_mask"], positions) if setup.teacher else {}
        student_outputs = run.wrapped(batch["input_ids"], batch["attention_mask"], positions)
    masks = Masks(tokens=batch["attention_mask"], targets=batch.get("targets", batch["input_ids"][:, :0]))
    losses = torch.stack(term_losses(setup.config.terms, student_outputs, teacher_outputs, masks, student_heads, teacher_heads))
    total = (losses * run.weights).sum()
    (run.scaler.scale(total / accum) if run.scaler else total / accum).backward()
    return torch.cat([total.detach()[None], losses.detach()])


def train_step(run: Run, state: TrainState, batches) -> float:
    """One optimizer step: --grad-accum micro-batches (gradients synchronised on the last), clip, step.
    Returns the step's learning rate."""
    lr = learning_rate(state.step, run.args.lr, run.args.warmup_steps, run.setup.max_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    accum = run.args.grad_accum
    for micro in range(accum):
        batch = to_device(next(batches), run.runtime.device)
        state.window_tokens += batch["tokens"]
        defer_sync = run.runtime.uses_ddp and micro < accum - 1
        with run.wrapped.no_sync() if defer_sync else nullcontext():
            values = forward_backward(run, batch)
        state.window += values / accum
    devices.reduce_gradients(run.optimizer, run.runtime)
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.setup.model.parameters(), run.args.max_grad_norm)
    devices.optimizer_step(run.optimizer, run.scaler)
    run.optimizer.zero_grad(set_to_none=True)
    devices.step_boundary(run.runtime)
    state.step += 1
    state.window_steps += 1
    return lr


def log_metrics(run: Run, state: TrainState, lr: float) -> dict:
    """Average the window over its steps and all processes, append it to metrics.jsonl, say it."""
    runtime, labels = run.runtime, run.setup.config.term_labels()
    values = (devices.reduce_sum(state.window, runtime) / (state.window_steps * runtime.world_size)).tolist()
    tokens = int(devices.reduce_sum(torch.tensor([state.window_tokens], device=runtime.device), runtime).item())
    now = time.perf_counter()
    state.tokens += tokens
    record = {
        "step": state.step,
        "loss": values[0],
        **dict(zip(labels, values[1:])),
        "lr": lr,
        "tokens": state.tokens,
        "tokens_per_s": tokens / max(now - state.last_log, 1e-9),
        "elapsed_s": now - state.started,
        "epoch": run.setup.stream.epoch(),
    }
    state.last_log = now
    state.window.zero_()
    state.window_steps = state.window_tokens = 0
    if runtime.is_main:
        with open(run.output / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        line = lambda: progress_line(record, labels, run.setup.max_steps)  # noqa: E731
        if state.step == run.stop_at:
            run.progress.say(line())
        else:
            run.progress.tick(line)
    return record


def progress_line(record: dict, labels: list[str], max_steps: int) -> str:
    step, elapsed = record["step"], record["elapsed_s"]
    terms = " ".join(f"{label} {record[label]:.4f}" for label in labels)
    eta = elapsed / step * (max_steps - step) if step else 0.0
    return (f"step {step}/{max_steps} loss {record['loss']:.4f} ({terms}) lr {record['lr']:.2e} "
            f"{record['tokens_per_s']:,.0f} tok/s elapsed {cli.format_duration(elapsed)} eta {cli.format_duration(eta)}")


def save(run: Run, state: TrainState) -> None:
    """A checkpoint of the model and everything `restore` needs (written by the main process)."""
    if run.runtime.is_main:
        saved = {
            "step": state.step,
            "elapsed": time.perf_counter() - state.started,
            "tokens": state.tokens,
            "optimizer": run.optimizer.state_dict(),
            "loader": run.setup.stream.state_dict(),
            "rng": devices.rng_state(run.runtime),
            "config": run.setup.config.to_json(),
            "train_config": run.train.to_json(),
            "world_size": run.runtime.world_size,
            "window": state.window.cpu(),
            "window_steps": state.window_steps,
            "window_tokens": state.window_tokens,
            **({"scaler": run.scaler.state_dict()} if run.scaler is not None else {}),
        }
        save_checkpoint(run.checkpoints, state.step, run.setup.model, saved, keep=run.args.keep_checkpoints)
    devices.barrier(run.runtime)


def finish(run: Run, state: TrainState) -> None:
    """Export the student once the schedule is done (not after a --run-steps slice)."""
    if state.step >= run.setup.max_steps and run.runtime.is_main:
        student_dir = run.output / "student"
        export_student(run.setup.model.student, run.setup.shards.tokenizer_dir, student_dir)
        run.say(f"exported {student_dir}")
    devices.barrier(run.runtime)


# ---------------------------------------------------------------- the loop


def train(args: argparse.Namespace, runtime: devices.Runtime) -> None:
    """Run (or continue) a distillation in this process."""
    quiet_transformers(args.verbose)
    with usage_errors():
        precision = devices.resolve_precision(args.precision, runtime.kind)
        run = make_run(args, runtime, precision, prepare(args, runtime, precision))
        state = restore(run)
    begin(run, state)
    run.setup.model.train()
    batches = iter(run.setup.stream)
    state.start_clock()
    while state.step < run.stop_at:
        lr = train_step(run, state, batches)
        if state.step % args.log_every == 0 or state.step == run.stop_at:
            log_metrics(run, state, lr)
        if state.step % args.save_every == 0 or state.step == run.stop_at:
            save(run, state)
    finish(run, state)


def _xla_process(index: int, args: argparse.Namespace) -> None:
    train(args, devices.init_runtime("xla"))


def run(args: argparse.Namespace) -> None:
    """Train on the chosen device: in this process, or one process per local TPU device."""
    with usage_errors():
        kind = devices.choose_device(args.device)
    if kind == "xla":
        import torch_xla

        torch_xla.launch(_xla_process, args=(args,))
    else:
        train(args, devices.init_runtime(kind))
