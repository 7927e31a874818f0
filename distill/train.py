"""`python -m distill.train`: distil a teacher BERT into a small student from token shards.

    python -m distill.train --shards DIR --teacher PATH_OR_HUB_ID --output DIR
        [--student minilm-23m|minilm-68m|distil-3l|CONFIG.json] [--objective minilm|minilmv2|distilbert]
        [--teacher-layer N | --layer-map T:S,...] [--relation-heads 48] [--init-from-teacher-layers 0,4,8]
        [--batch-size 256] [--grad-accum 1] [--lr 6e-4] [--warmup-steps 4000] [--max-steps N]
        [--precision auto|bf16|fp16|fp32] [--mlm-probability 0.15] [--seed 0] [--save-every N] [--resume]

Writes DIR/distill_config.json, DIR/metrics.jsonl (one JSON object per logging step),
DIR/checkpoints/step-N/ (the newest two) and, at the end, DIR/student/ (a Hugging Face model
directory with the tokenizer). Progress goes to stderr. Multi-GPU: `torchrun --nproc_per_node
N -m distill.train ...`; TPU: `--device xla` (one process per local TPU device).
See docs/distill.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import BertForMaskedLM

from distill import device as devices
from distill.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from distill.configs import (
    OBJECTIVES,
    PRESET_INIT_LAYERS,
    STUDENT_PRESETS,
    DistillConfig,
    objective_terms,
    parse_layer_map,
    parse_weights,
    resolve_layer,
    student_config_dict,
    validate,
)
from distill.data import BatchStream, ShardBatches, ShardDir, open_shard_dir, open_split
from distill.export import export_student
from distill.losses import Masks
from distill.masking import masking_spec
from distill.models import (
    CapturingStudent,
    Teacher,
    check_vocabulary,
    init_from_teacher,
    load_teacher,
    model_vocabulary,
    term_losses,
)
from transforms.storage import write_bytes_atomic, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distill.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", required=True, help="token shard directory (pipeline.shard output)")
    parser.add_argument("--teacher", required=True, help="teacher BERT: local directory or hub id")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--student", default="minilm-23m", help=f"{', '.join(STUDENT_PRESETS)} or a BertConfig JSON file")
    parser.add_argument("--objective", default="minilm", choices=OBJECTIVES)
    parser.add_argument("--teacher-layer", type=int, help="teacher layer (0-based, -1 = last) the last student layer learns from")
    parser.add_argument("--layer-map", help="TEACHER:STUDENT layer pairs, e.g. 3:1,7:3,11:5 (0-based)")
    parser.add_argument("--relation-heads", type=int, default=48, help="minilmv2 relation heads (default 48)")
    parser.add_argument("--temperature", type=float, default=2.0, help="distilbert soft-target temperature (default 2)")
    parser.add_argument("--loss-weights", help="NAME=WEIGHT,...: reweight, add or (weight 0) drop loss terms")
    parser.add_argument("--init-from-teacher-layers", help="comma-separated 0-based teacher layers copied into the student "
                        "(with embeddings and MLM head); distil-3l defaults to 0,4,8")
    parser.add_argument("--batch-size", type=int, default=256, help="sequences per device per micro-batch (default 256)")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    parser.add_argument("--lr", type=float, default=6e-4, help="peak learning rate (default 6e-4)")
    parser.add_argument("--warmup-steps", type=int, default=4000, help="linear warm-up steps (default 4000)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps of the schedule (default: one pass over the train split)")
    parser.add_argument("--run-steps", type=int, help="stop this invocation after this many steps (checkpointed); "
                        "continue with --resume")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--precision", default="auto", choices=devices.PRECISIONS,
                        help="auto = bf16 on GPU/TPU, fp32 on CPU")
    parser.add_argument("--device", default="auto", choices=devices.DEVICES)
    parser.add_argument("--mlm-probability", type=float, default=0.15)
    parser.add_argument("--shuffle-buffer", type=int, default=100_000, help="rows per shuffle window (default 100000)")
    parser.add_argument("--loader-workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10, help="steps per metrics.jsonl line (default 10)")
    parser.add_argument("--save-every", type=int, default=1000, help="steps between checkpoints (default 1000)")
    parser.add_argument("--keep-checkpoints", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint in OUTPUT")
    return parser


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then linear decay to 0 at `total` (step is 0-based)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


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
    for name in ("batch_size", "grad_accum", "log_every", "save_every", "keep_checkpoints"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
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

    torch.manual_seed(args.seed)
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


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6)


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in batch.items()}


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from (they will be logged again)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line)["step"] <= last_step]
    write_bytes_atomic(str(path), "".join(line + "\n" for line in kept).encode("utf-8"))


def train(args: argparse.Namespace, runtime: devices.Runtime) -> Path:
    """Run (or continue) a distillation; returns the exported student directory."""
    precision = devices.resolve_precision(args.precision, runtime.kind)
    output = Path(args.output)
    checkpoints = output / "checkpoints"
    if not args.resume and checkpoints.exists() and any(checkpoints.iterdir()):
        raise ValueError(f"{output} already holds checkpoints: pass --resume to continue, or choose another --output")
    setup = prepare(args, runtime, precision)
    config, model, stream, teacher = setup.config, setup.model, setup.stream, setup.teacher
    labels = config.term_labels()
    weights = torch.tensor([term.weight for term in config.terms], device=runtime.device)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    scaler = torch.amp.GradScaler(runtime.kind) if precision == "fp16" and runtime.kind != "xla" else None
    step, elapsed, tokens_done = 0, 0.0, 0
    window = torch.zeros(len(config.terms) + 1, device=runtime.device)  # loss, then each term
    window_steps = window_tokens = 0

    resume_from = latest_checkpoint(checkpoints) if args.resume else None
    if resume_from is not None:
        state = load_checkpoint(resume_from, model)
        if state["config"] != config.to_json():
            raise ValueError(f"{resume_from} was trained with another config; compare {output / 'distill_config.json'}")
        if state["world_size"] != runtime.world_size:
            raise ValueError(f"{resume_from} was written by {state['world_size']} processes, this run has {runtime.world_size}")
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
        stream.load_state_dict(state["loader"])
        step, elapsed, tokens_done = state["step"], state["elapsed"], state["tokens"]
        window = state["window"].to(runtime.device)
        window_steps, window_tokens = state["window_steps"], state["window_tokens"]
        devices.set_rng_state(state["rng"], runtime)
        if runtime.is_main:
            print(f"distill: resuming from {resume_from} at step {step}", file=sys.stderr)
    elif args.resume and runtime.is_main:
        print(f"distill: --resume: no intact checkpoint in {checkpoints}, starting from step 0", file=sys.stderr)
    if runtime.is_main:
        output.mkdir(parents=True, exist_ok=True)
        trim_metrics(output / "metrics.jsonl", step)
        write_json_atomic(str(output / "distill_config.json"), json.loads(config.to_json()))
        print(
            f"distill: {args.objective} {args.student} ({sum(p.numel() for p in model.student.parameters()) / 1e6:.1f}M "
            f"params) from {args.teacher} (running {config.teacher_depth()} of {config.teacher_layers} layers) on "
            f"{runtime.kind} x{runtime.world_size}, {precision}, {setup.max_steps} steps",
            file=sys.stderr,
        )

    wrapped = model
    if runtime.uses_ddp:
        wrapped = DistributedDataParallel(model, device_ids=[runtime.local_rank] if runtime.kind == "cuda" else None)
    student_heads = model.student.config.num_attention_heads
    teacher_heads = teacher.num_heads if teacher else student_heads
    model.train()
    batches = iter(stream)
    stop_at = setup.max_steps if args.run_steps is None else min(setup.max_steps, step + args.run_steps)
    started = time.perf_counter() - elapsed
    last_log_time = time.perf_counter()

    def checkpoint() -> None:
        if runtime.is_main:
            state = {
                "step": step,
                "elapsed": time.perf_counter() - started,
                "tokens": tokens_done,
                "optimizer": optimizer.state_dict(),
                "loader": stream.state_dict(),
                "rng": devices.rng_state(runtime),
                "config": config.to_json(),
                "world_size": runtime.world_size,
                "window": window.cpu(),
                "window_steps": window_steps,
                "window_tokens": window_tokens,
                **({"scaler": scaler.state_dict()} if scaler is not None else {}),
            }
            save_checkpoint(checkpoints, step, model, state, keep=args.keep_checkpoints)
        devices.barrier(runtime)

    while step < stop_at:
        lr = learning_rate(step, args.lr, args.warmup_steps, setup.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for micro in range(args.grad_accum):
            batch = to_device(next(batches), runtime.device)
            window_tokens += batch["tokens"]
            sync = micro == args.grad_accum - 1
            with wrapped.no_sync() if runtime.uses_ddp and not sync else nullcontext():
                with devices.autocast(runtime, precision):
                    positions = batch.get("positions")
                    teacher_outputs = teacher(batch["input_ids"], batch["attention_mask"], positions) if teacher else {}
                    student_outputs = wrapped(batch["input_ids"], batch["attention_mask"], positions)
                masks = Masks(tokens=batch["attention_mask"], targets=batch.get("targets", batch["input_ids"][:, :0]))
                losses = torch.stack(term_losses(config.terms, student_outputs, teacher_outputs, masks, student_heads, teacher_heads))
                total = (losses * weights).sum()
                (scaler.scale(total / args.grad_accum) if scaler else total / args.grad_accum).backward()
            window += torch.cat([total.detach()[None], losses.detach()]) / args.grad_accum
        devices.reduce_gradients(optimizer, runtime)
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        devices.optimizer_step(optimizer, scaler)
        optimizer.zero_grad(set_to_none=True)
        devices.step_boundary(runtime)
        step += 1
        window_steps += 1
        if step % args.log_every == 0 or step == stop_at:
            values = (devices.reduce_sum(window, runtime) / (window_steps * runtime.world_size)).tolist()
            tokens = int(devices.reduce_sum(torch.tensor([window_tokens], device=runtime.device), runtime).item())
            now = time.perf_counter()
            tokens_done += tokens
            record = {
                "step": step,
                "loss": values[0],
                **dict(zip(labels, values[1:])),
                "lr": lr,
                "tokens": tokens_done,
                "tokens_per_s": tokens / max(now - last_log_time, 1e-9),
                "elapsed_s": now - started,
                "epoch": stream.epoch(),
            }
            last_log_time = now
            window.zero_()
            window_steps = window_tokens = 0
            if runtime.is_main:
                with open(output / "metrics.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                terms = " ".join(f"{label} {value:.4f}" for label, value in zip(labels, values[1:]))
                eta = (now - started) / step * (setup.max_steps - step) if step else 0.0
                print(
                    f"step {step}/{setup.max_steps} loss {values[0]:.4f} ({terms}) lr {lr:.2e} "
                    f"{record['tokens_per_s']:,.0f} tok/s elapsed {format_duration(now - started)} eta {format_duration(eta)}",
                    file=sys.stderr,
                    flush=True,
                )
        if step % args.save_every == 0 or step == stop_at:
            checkpoint()

    student_dir = output / "student"
    if step >= setup.max_steps and runtime.is_main:
        export_student(model.student, setup.shards.tokenizer_dir, student_dir)
        print(f"distill: exported {student_dir}", file=sys.stderr)
    devices.barrier(runtime)
    return student_dir


def _xla_process(index: int, args: argparse.Namespace) -> None:
    train(args, devices.init_runtime("xla"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        kind = devices.choose_device(args.device)
        if kind == "xla":
            import torch_xla

            torch_xla.launch(_xla_process, args=(args,))
        else:
            train(args, devices.init_runtime(kind))
    except ValueError as error:  # includes TokenShardError and VocabularyMismatch
        print(f"distill.train: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
