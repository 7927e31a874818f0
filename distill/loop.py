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
from distill.attention import allowed_pairs, attention_bias
from distill.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from distill.configs import PRESET_INIT_LAYERS, DistillConfig, TermSettings, inapplicable_options, objective_terms
from distill.configs import parse_layer_map, parse_weights, resolve_layer, student_config_dict, validate
from distill.data import BatchStream, MixedStream, ShardBatches, ShardDir, open_shard_dir, open_split
from distill.export import export_student
from distill.losses import Masks
from distill.masking import masking_spec
from distill.models import CapturingStudent, Teacher, check_vocabulary, init_from_teacher, load_student_weights
from distill.models import load_teacher, model_vocabulary, quiet_transformers, term_losses
from distill.recipes import RECIPES, auto_relation_heads, default_warmup
from pipeline import cli
from tokenizer_training.loading import LoadedTokenizer
from transforms.storage import write_bytes_atomic, write_json_atomic


@contextmanager
def usage_errors():
    """ValueErrors of the set-up (bad options, unusable shards or teacher) become usage errors (exit 2)."""
    try:
        yield
    except ValueError as error:  # includes TokenShardError, VocabularyMismatch and TokenizerSourceError
        raise cli.UsageError(str(error)) from error


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then linear decay to 0 at `total` (step is 0-based)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


# ---------------------------------------------------------------- set-up


def student_spec(args: argparse.Namespace) -> str:
    """--student, or the objective's recipe student (distil-3l for distilkobert)."""
    return args.student or RECIPES[args.objective].student


def init_layers(args: argparse.Namespace, teacher_layers: int) -> list[int] | None:
    """--init-from-teacher-layers, else the objective's or the student preset's layers (0-based)."""
    if args.init_from_teacher_layers:
        layers = [int(x) for x in args.init_from_teacher_layers.split(",")]
    else:
        layers = RECIPES[args.objective].init_from_teacher_layers or PRESET_INIT_LAYERS.get(student_spec(args))
    return [resolve_layer(i, teacher_layers, "teacher") for i in layers] if layers else None


def term_settings(args: argparse.Namespace, teacher_config, student: dict) -> TermSettings:
    """The loss parameters: given options, else the recipe's (relation heads auto, temperature 2)."""
    heads = args.relation_heads
    if heads in (None, "auto"):
        heads = auto_relation_heads(teacher_config.hidden_size, student["hidden_size"])
    return TermSettings(relation_heads=heads, temperature=args.temperature or RECIPES[args.objective].temperature or 2.0,
                        soft_target_positions=args.soft_target_positions or "all",
                        relation_average=args.relation_average or "sequence")


def build_config(args: argparse.Namespace, teacher_config, shards: ShardDir,
                 student_tokenizer: LoadedTokenizer | None = None) -> DistillConfig:
    """The declarative config from the command line and the objective's recipe; options that no
    term of the result reads are refused. The student's vocabulary is the shards', or with several
    sources `student_tokenizer`'s (distill.sources)."""
    if args.teacher_layer is not None and args.layer_map:
        raise ValueError("give --teacher-layer or --layer-map, not both")
    vocab = student_tokenizer or shards.tokenizer
    student = student_config_dict(student_spec(args), teacher_config, len(vocab.vocab), vocab.special_ids["pad"],
                                  shards.seq_len)
    layer_map = parse_layer_map(args.layer_map) if args.layer_map else None
    if args.teacher_layer is not None:
        layer_map = [(args.teacher_layer, -1)]
    terms = objective_terms(args.objective, teacher_config.num_hidden_layers, student["num_hidden_layers"], layer_map,
                            term_settings(args, teacher_config, student),
                            parse_weights(args.loss_weights) if args.loss_weights else {})
    given = {"--relation-heads": args.relation_heads, "--relation-average": args.relation_average,
             "--temperature": args.temperature, "--soft-target-positions": args.soft_target_positions,
             "--mlm-probability": args.mlm_probability, "--teacher-layer": args.teacher_layer,
             "--layer-map": args.layer_map}
    unused = inapplicable_options(given, terms)
    if unused:
        raise ValueError(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to this run: no loss "
                         f"term of --objective {args.objective} (terms: {', '.join(t.name for t in terms)}) reads "
                         f"{'it' if len(unused) == 1 else 'them'}; drop {'it' if len(unused) == 1 else 'them'} "
                         "or add a term that does with --loss-weights")
    config = DistillConfig(
        objective=args.objective, student=student, terms=terms,
        init_from_teacher_layers=init_layers(args, teacher_config.num_hidden_layers),
        mlm_probability=None, teacher_layers=teacher_config.num_hidden_layers,
        teacher_hidden_size=teacher_config.hidden_size, attention_scope=args.attention_scope,
        reference=RECIPES[args.objective].source,
    )
    reads_logits = config.needs_student_logits() or config.needs_teacher_logits()
    masking = (args.mlm_probability or 0.15) if reads_logits else None
    return DistillConfig(**{**config.__dict__, "mlm_probability": masking})


@dataclass
class Setup:
    """Everything the loop needs, built and checked before the first step."""

    config: DistillConfig
    shards: ShardDir
    teacher: Teacher | None
    model: CapturingStudent
    stream: BatchStream | MixedStream
    max_steps: int
    # Several sources (distill.sources): each source's teacher (by the batch's "source" index), names,
    # --mix, the student's tokenizer files, and the fingerprint of all their train splits.
    teachers: list[Teacher] | None = None
    source_names: list[str] | None = None
    mix: dict | None = None
    student_files: dict[str, bytes] | None = None
    train_data: str | None = None


def prepare(args: argparse.Namespace, runtime: devices.Runtime, precision: str) -> Setup:
    """Load and check shards and teacher, build the config, the student and the loader."""
    if args.source:
        from distill.sources import prepare_sources

        return prepare_sources(args, runtime, precision)
    shards = open_shard_dir(args.shards)
    split = open_split(shards, "train")
    teacher_model, head_trained = load_teacher(args.teacher)
    check_vocabulary("the teacher", teacher_model.config.vocab_size, model_vocabulary(args.teacher, "--teacher"),
                     shards.vocab)
    config = build_config(args, teacher_model.config, shards)
    validate(config, teacher_model.config)
    if not head_trained and (config.needs_teacher_logits() or config.init_from_teacher_layers):
        raise ValueError(f"{args.teacher} has no trained MLM head, which the {args.objective} objective / initialisation needs")
    limit = min(teacher_model.config.max_position_embeddings, config.student["max_position_embeddings"])
    if shards.seq_len > limit:
        raise ValueError(f"the shards' sequences have {shards.seq_len} tokens, more than the {limit} positions of the models")

    torch.manual_seed(args.seed)  # the student's initialisation (and its projections) draw from here
    student = BertForMaskedLM._from_config(config.student_config(), attn_implementation="sdpa")
    if load_student_weights(student, args.student):
        check_vocabulary("--student", student.config.vocab_size, model_vocabulary(args.student, "--student"),
                         shards.vocab)
    if config.init_from_teacher_layers:
        init_from_teacher(student, teacher_model, config.init_from_teacher_layers)
    teacher = None
    if config.needs_teacher():
        teacher = Teacher(teacher_model, config).to(runtime.device, devices.DTYPES[precision])
    model = CapturingStudent(student, config).to(runtime.device)
    student.tie_weights()  # on XLA, .to() gives each module a new Parameter: the MLM decoder would part from the embeddings
    stream = make_stream(args, runtime, shards, split, config)
    max_steps = args.max_steps or max(1, stream.batches_per_epoch() // args.grad_accum)
    return Setup(config, shards, teacher, model, stream, max_steps)


def make_stream(args: argparse.Namespace, runtime: devices.Runtime, shards: ShardDir, split, config: DistillConfig,
                seed: int | None = None, source: int | None = None, student_map=None) -> BatchStream:
    """The resumable loader of this rank: masking when a loss reads MLM logits, the attention scope's layout;
    for one of several sources, its own seed, its index and its map into the student's vocabulary."""
    ids = shards.special_ids
    masking = None
    if config.mlm_probability is not None:
        masking = masking_spec(shards.vocab, ids, shards.seq_len, config.mlm_probability)
    dataset = ShardBatches(
        split, args.batch_size, seed=args.seed if seed is None else seed, shuffle_buffer=args.shuffle_buffer,
        masking=masking, pad_id=ids["pad"], rank=runtime.rank, world_size=runtime.world_size,
        attention_scope=config.attention_scope, cls_id=ids["cls"], sep_id=ids["sep"], source=source,
        student_map=student_map,
    )
    return BatchStream(dataset, num_workers=args.loader_workers, pin_memory=runtime.kind == "cuda")


def train_data_fingerprint(shards: ShardDir) -> str:
    """The train split's identity: the sha256 of its shard files' sha256s (from the verified manifest)."""
    entries = shards.manifest["splits"]["train"]["shards"]
    return hashlib.sha256("\n".join(entry["sha256"] for entry in entries).encode("ascii")).hexdigest()[:16]


def make_optimizer(model: torch.nn.Module, train: options.TrainConfig) -> torch.optim.AdamW:
    """AdamW with the resolved settings (the objective's reference unless given), without weight
    decay on biases and LayerNorm weights (group 0 decays, group 1 does not)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.adam_betas), eps=train.adam_eps)


def resolve_train_config(args: argparse.Namespace, setup: Setup, precision: str) -> options.TrainConfig:
    """How to train: the options given, the objective's recipe for the rest; a warm-up that would
    not end before the last step is refused."""
    recipe, max_steps = RECIPES[args.objective], setup.max_steps
    warmup = args.warmup_steps if args.warmup_steps is not None else default_warmup(recipe, max_steps)
    if args.warmup_steps is not None and max_steps > 1 and warmup >= max_steps:
        raise ValueError(f"--warmup-steps {warmup} is not below --max-steps {max_steps}: the learning rate would never "
                         f"reach its peak and decay; leave --warmup-steps out (the {args.objective} default is "
                         f"{default_warmup(recipe, max_steps)} here) or give fewer")
    return options.TrainConfig.from_args(
        args, precision=precision, max_steps=max_steps, mix=setup.mix,
        train_data=setup.train_data or train_data_fingerprint(setup.shards),
        lr=args.lr or recipe.lr, warmup_steps=warmup,
        weight_decay=recipe.weight_decay if args.weight_decay is None else args.weight_decay,
        max_grad_norm=args.max_grad_norm or recipe.max_grad_norm, adam_betas=list(args.adam_betas or recipe.adam_betas),
        adam_eps=args.adam_eps or recipe.adam_eps, mlm_probability=setup.config.mlm_probability)


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
    train = resolve_train_config(args, setup, precision)
    optimizer = make_optimizer(setup.model, train)
    scaler = torch.amp.GradScaler(runtime.kind) if precision == "fp16" and runtime.kind != "xla" else None
    weights = torch.tensor([term.weight for term in setup.config.terms], device=runtime.device)
    return Run(args, train, runtime, setup, optimizer, scaler, weights, cli.Progress(options.TRAIN, not args.quiet))


# ---------------------------------------------------------------- state and restore


@dataclass
class TrainState:
    """What changes step by step (and is saved in every checkpoint)."""

    window: torch.Tensor  # since the last log step: summed loss, then each term
    sources: torch.Tensor | None = None  # several sources: [source, (summed loss, micro-batches)] since the last log
    step: int = 0
    elapsed: float = 0.0  # seconds trained before this invocation started its clock
    tokens: int = 0  # non-pad tokens of the logged steps, all ranks
    window_steps: int = 0
    window_tokens: int = 0
    rate_tokens: int = 0  # tokens since the last log or since this invocation started (not saved)
    started: float = field(default_factory=time.perf_counter)  # the clock's zero: now - elapsed trained
    last_log: float = field(default_factory=time.perf_counter)

    def start_clock(self) -> None:
        """Start timing this invocation: a resumed window's tokens were trained before the restart,
        so tokens/s counts only what is trained from now on."""
        now = time.perf_counter()
        self.started, self.last_log, self.rate_tokens = now - self.elapsed, now, 0


def restore(run: Run) -> TrainState:
    """A fresh TrainState, or with --resume the newest intact checkpoint's, loaded into the run."""
    names = run.setup.source_names
    fresh = TrainState(window=torch.zeros(len(run.setup.config.terms) + 1, device=run.runtime.device),
                       sources=torch.zeros(len(names), 2, device=run.runtime.device) if names else None)
    path = latest_checkpoint(run.checkpoints) if run.args.resume else None
    if path is None:
        if run.args.resume:
            run.say(f"--resume: no intact checkpoint in {run.checkpoints}, starting from step 0")
        return fresh
    saved = load_checkpoint(path, run.setup.model)
    check_checkpoint(run, saved, path)
    run.optimizer.load_state_dict(saved["optimizer"])
    for group in run.optimizer.param_groups:  # accepted changes of these options apply from now on
        group.update(betas=tuple(run.train.adam_betas), eps=run.train.adam_eps)
    run.optimizer.param_groups[0]["weight_decay"] = run.train.weight_decay
    if run.scaler is not None and "scaler" in saved:
        run.scaler.load_state_dict(saved["scaler"])
    run.setup.stream.load_state_dict(saved["loader"], strict=not run.args.allow_config_change)
    state = TrainState(window=saved["window"].to(run.runtime.device), step=saved["step"], elapsed=saved["elapsed"],
                       tokens=saved["tokens"], window_steps=saved["window_steps"], window_tokens=saved["window_tokens"],
                       sources=saved["sources"].to(run.runtime.device) if names else None)
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
        for line in banner(run):
            run.say(line)
    run.wrapped = setup.model
    if run.runtime.uses_ddp:
        ids = [run.runtime.local_rank] if run.runtime.kind == "cuda" else None
        run.wrapped = DistributedDataParallel(setup.model, device_ids=ids)
    run.stop_at = setup.max_steps if args.run_steps is None else min(setup.max_steps, state.step + args.run_steps)


def banner(run: Run) -> list[str]:
    """Every resolved setting, said at the start: what a run does should never have to be guessed."""
    setup, args, train = run.setup, run.args, run.train
    config, student = setup.config, setup.config.student_config()
    params = sum(p.numel() for p in setup.model.student.parameters()) / 1e6
    terms = ", ".join(f"{label} x{term.weight:g}" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(term.params.items()))})"
                                                      if term.params else "")
                      for label, term in zip(config.term_labels(), config.terms))
    init = config.init_from_teacher_layers
    return [
        f"{args.objective}: student {student_spec(args)} ({student.num_hidden_layers} layers, hidden "
        f"{student.hidden_size}, {student.num_attention_heads} heads, {params:.1f}M params"
        f"{f', initialised from teacher layers {init}' if init else ''}) from {teachers_said(run)} (running "
        f"{config.teacher_depth()} of {config.teacher_layers} layers)",
        f"terms: {terms}",
        f"attention scope {config.attention_scope}; masking "
        f"{'off' if config.mlm_probability is None else config.mlm_probability}",
        f"schedule: {train.max_steps} steps, warm-up {train.warmup_steps}, peak lr {train.lr:g}, linear decay to 0; "
        f"AdamW betas {','.join(f'{b:g}' for b in train.adam_betas)} eps {train.adam_eps:g} weight decay "
        f"{train.weight_decay:g}; clip {train.max_grad_norm:g}",
        f"batch {train.batch_size} x {train.grad_accum} accumulated x {run.runtime.world_size} process(es) on "
        f"{run.runtime.kind}, {train.precision}; seed {train.seed}",
    ]


def teachers_said(run: Run) -> str:
    """The teacher, or with several sources each source's teacher and shards and the mix."""
    if not run.setup.source_names:
        return run.args.teacher
    sources = ", ".join(f"{name} ({teacher} on {shards}, weight {run.setup.mix[name]})"
                        for name, teacher, shards in map(options.parse_source, run.args.source))
    return f"the sources {sources}"


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
    teacher = setup.teachers[batch["source"]] if setup.teachers else setup.teacher  # several sources: the batch's own
    student_heads = setup.model.student.config.num_attention_heads
    teacher_heads = teacher.num_heads if teacher else student_heads
    allowed = allowed_pairs(batch["segments"])
    bias = attention_bias(allowed, devices.DTYPES[run.train.precision])
    inputs = (batch["input_ids"], bias, batch["position_ids"], batch.get("positions"))
    # A source in another vocabulary than the student's: the same tokens, in the student's ids.
    student_inputs = (batch.get("student_input_ids", batch["input_ids"]), *inputs[1:])
    with devices.autocast(run.runtime, run.train.precision):
        teacher_outputs = teacher(*inputs) if teacher else {}
        student_outputs = run.wrapped(*student_inputs)
    targets = batch.get("student_targets", batch.get("targets", batch["input_ids"][:, :0]))
    masks = Masks(tokens=batch["attention_mask"], targets=targets, pairs=allowed)
    losses = torch.stack(term_losses(setup.config.terms, student_outputs, teacher_outputs, masks, student_heads, teacher_heads))
    total = (losses * run.weights).sum()
    (run.scaler.scale(total / accum) if run.scaler else total / accum).backward()
    return torch.cat([total.detach()[None], losses.detach()])


def train_step(run: Run, state: TrainState, batches) -> float:
    """One optimizer step: --grad-accum micro-batches (gradients synchronised on the last), clip, step.
    Returns the step's learning rate."""
    lr = learning_rate(state.step, run.train.lr, run.train.warmup_steps, run.setup.max_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    accum = run.args.grad_accum
    for micro in range(accum):
        batch = to_device(next(batches), run.runtime.device)
        state.window_tokens += batch["tokens"]
        state.rate_tokens += batch["tokens"]
        defer_sync = run.runtime.uses_ddp and micro < accum - 1
        with run.wrapped.no_sync() if defer_sync else nullcontext():
            values = forward_backward(run, batch)
        state.window += values / accum
        if state.sources is not None:
            state.sources[batch["source"]] += torch.stack([values[0], torch.ones_like(values[0])])
    devices.reduce_gradients(run.optimizer, run.runtime)
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.setup.model.parameters(), run.train.max_grad_norm)
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
    counts = torch.tensor([state.window_tokens, state.rate_tokens], device=runtime.device)
    tokens, rate_tokens = (int(count) for count in devices.reduce_sum(counts, runtime).tolist())
    now = time.perf_counter()
    state.tokens += tokens
    record = {
        "step": state.step,
        "loss": values[0],
        **dict(zip(labels, values[1:])),
        **source_losses(run, state),
        "lr": lr,
        "tokens": state.tokens,
        "tokens_per_s": rate_tokens / max(now - state.last_log, 1e-9),
        "elapsed_s": now - state.started,
        "epoch": run.setup.stream.epoch(),
    }
    state.last_log = now
    state.window.zero_()
    state.window_steps = state.window_tokens = state.rate_tokens = 0
    if runtime.is_main:
        with open(run.output / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        line = lambda: progress_line(record, labels, run.setup.max_steps)  # noqa: E731
        if state.step == run.stop_at:
            run.progress.say(line())
        else:
            run.progress.tick(line)
    return record


def source_losses(run: Run, state: TrainState) -> dict:
    """Several sources: loss_NAME, each source's mean micro-batch loss over the window, all processes
    (null for a source without a micro-batch in it); the window is reset."""
    if state.sources is None:
        return {}
    totals = devices.reduce_sum(state.sources, run.runtime).tolist()
    state.sources.zero_()
    return {f"loss_{name}": total / count if count else None
            for name, (total, count) in zip(run.setup.source_names, totals)}


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
            **({"sources": state.sources.cpu()} if state.sources is not None else {}),
            **({"scaler": run.scaler.state_dict()} if run.scaler is not None else {}),
        }
        save_checkpoint(run.checkpoints, state.step, run.setup.model, saved, keep=run.args.keep_checkpoints)
    devices.barrier(run.runtime)


def finish(run: Run, state: TrainState) -> None:
    """Export the student once the schedule is done (not after a --run-steps slice)."""
    if state.step >= run.setup.max_steps and run.runtime.is_main:
        student_dir = run.output / "student"
        files = run.setup.student_files or run.setup.shards.tokenizer.files
        export_student(run.setup.model.student, files, student_dir)
        run.say(f"exported {student_dir}")
    devices.barrier(run.runtime)


# ---------------------------------------------------------------- the loop


def train(args: argparse.Namespace, runtime: devices.Runtime) -> None:
    """Run (or continue) a distillation in this process."""
    quiet_transformers(args.verbose)
    with usage_errors():
        probe = devices.StepMetrics.from_env(runtime)  # off unless DISTILL_XLA_METRICS names a file
        precision = devices.resolve_precision(args.precision, runtime.kind)
        run = make_run(args, runtime, precision, prepare(args, runtime, precision))
        state = restore(run)
    begin(run, state)
    run.setup.model.train()
    batches = iter(run.setup.stream)
    state.start_clock()
    probe.mark("start", state.step)
    while state.step < run.stop_at:
        lr = train_step(run, state, batches)
        probe.mark("step", state.step)
        if state.step % args.log_every == 0 or state.step == run.stop_at:
            log_metrics(run, state, lr)
            probe.mark("log", state.step)
        if state.step % args.save_every == 0 or state.step == run.stop_at:
            save(run, state)
            probe.mark("save", state.step)
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
