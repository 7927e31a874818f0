"""Distillation benchmark: shard loader throughput, a CPU training step, and GPU figures.

(a) The loader (memory-mapped shards -> shuffled, masked, fixed-shape batches) in one process
    on one thread, against Hugging Face's DataCollatorForLanguageModeling masking the same rows;
    target: >= 5M masked tokens/s per CPU core.
(b) One minilm-23m step from a 12-layer base-size teacher (BertConfig defaults, random init,
    the NSMC vocabulary) at seq 128 on the CPU, split into teacher forward, student forward,
    loss, backward and optimizer; against the way public MiniLM re-implementations do it
    (eager attention with output_attentions=True and a per-example Python loop in the loss).
(c) On a CUDA GPU: bf16 throughput, model FLOPs utilisation, and the largest batch that fits.

The shards are built here from the NSMC reviews by the project's own chain (cleaned reviews ->
pipeline.tokenize -> pipeline.shard concat-packed to SEQ_LEN); their build time is reported but
not part of any figure. `--quick` runs every part briefly on the embedded sample corpus instead
(a smoke test that needs no data; its figures mean nothing and are not written to bench/results).
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertTokenizerFast,
    DataCollatorForLanguageModeling,
)

from bench.common import (
    NSMC_PATH,
    RESULTS_DIR,
    WORK_DIR,
    machine_line,
    read_nsmc_texts,
    write_clean_corpus,
)
from distill.attention import allowed_pairs, attention_bias, row_layout
from distill.configs import DistillConfig, TermSettings, objective_terms, student_config_dict
from distill.data import ShardBatches, open_shard_dir, open_split
from distill.losses import Masks, relation_log_probs
from distill.masking import masking_spec
from distill.models import CapturingStudent, Teacher, term_losses
from pipeline import shard, tokenize
from transforms import token_shards
from transforms.clean import clean_text

SEQ_LEN = 128
VOCAB_SIZE = 30_000
LOADER_TARGET = 5_000_000  # masked tokens/s per core
# Dense bf16 peak of common GPUs (FLOP/s), for MFU; BENCH_PEAK_TFLOPS overrides.
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 70e12, "RTX 4090": 165e12}


def build_shards(texts: list[str], workdir: Path, vocab_size: int = VOCAB_SIZE, train_shards: int = 8) -> Path:
    """Token shards of cleaned texts, made by the project's own chain: the texts as a clean corpus,
    `pipeline.tokenize` and `pipeline.shard` (seq SEQ_LEN)."""
    corpus, tokenizer_dir, root = workdir / "corpus", workdir / "tokenizer", workdir / "shards"
    write_clean_corpus(corpus, [f"text-{index:06d}" for index in range(len(texts))], texts)
    if tokenize.main(["--input", str(corpus), "--output", str(tokenizer_dir), "--vocab-size", str(vocab_size),
                      "--overwrite", "--quiet"]) != 0:
        raise RuntimeError("pipeline.tokenize failed")
    slots = sum(len(text) for text in texts)  # about one id per character of Korean text, a sizing guess only
    if shard.main(["--input", str(corpus), "--tokenizer", str(tokenizer_dir), "--output", str(root),
                   "--seq-len", str(SEQ_LEN), "--validation-fraction", "0.02",
                   "--shard-tokens", str(slots // train_shards), "--overwrite"]) != 0:
        raise RuntimeError("pipeline.shard failed")
    return root


def build_nsmc_shards(data_path: Path, workdir: Path, train_shards: int = 8) -> Path:
    """Token shards of the cleaned NSMC reviews (at least 10 characters), vocabulary VOCAB_SIZE."""
    texts = [t for t in (clean_text(text) for text in read_nsmc_texts(data_path)) if len(t) >= 10]
    return build_shards(texts, workdir, VOCAB_SIZE, train_shards)


def bench_loader(shard_dir: Path, batch_size: int = 256, seconds: float = 10.0) -> dict:
    """Masked tokens/s of our loader and of HF's collator, one process on one thread."""
    torch.set_num_threads(1)
    shards = open_shard_dir(shard_dir)
    split = open_split(shards, "train")
    spec = masking_spec(shards.vocab, shards.special_ids, shards.seq_len)
    dataset = ShardBatches(split, batch_size, seed=0, shuffle_buffer=100_000, masking=spec, pad_id=0)

    def measure(batches) -> tuple[float, float, int]:
        tokens, wall, cpu = 0, time.perf_counter(), time.process_time()
        for batch in batches:
            tokens += batch["input_ids"].numel()
            if time.perf_counter() - wall > seconds:
                break
        return tokens / (time.perf_counter() - wall), tokens / (time.process_time() - cpu), tokens

    ours_wall, ours_cpu, ours_tokens = measure(iter(dataset))
    tokenizer = BertTokenizerFast.from_pretrained(str(shards.tokenizer_dir))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, return_tensors="pt")
    rows = np.concatenate([token_shards.open_shard(p) for p in split.paths])

    def collated():
        for start in range(0, len(rows) - batch_size, batch_size):
            yield collator([{"input_ids": row.tolist()} for row in rows[start : start + batch_size]])

    base_wall, base_cpu, base_tokens = measure(collated())
    torch.set_num_threads(os.cpu_count() or 1)
    return {"ours_wall": ours_wall, "ours_cpu": ours_cpu, "ours_tokens": ours_tokens,
            "base_wall": base_wall, "base_cpu": base_cpu, "base_tokens": base_tokens,
            "rows": split.total_rows, "shards": len(split.paths)}


def minilm_setup(vocab_size: int, attention: str = "sdpa") -> tuple[DistillConfig, BertForMaskedLM, BertForMaskedLM]:
    """The 12-layer base teacher (random init), the minilm-23m student, and the minilm config between them."""
    teacher_config = BertConfig(vocab_size=vocab_size)
    student_dict = student_config_dict("minilm-23m", teacher_config, vocab_size, 0)
    config = DistillConfig(
        objective="minilm", student=student_dict,
        terms=objective_terms("minilm", 12, student_dict["num_hidden_layers"], None, TermSettings(48, 2.0), {}),
        init_from_teacher_layers=None, mlm_probability=0.15, teacher_layers=12,
        teacher_hidden_size=teacher_config.hidden_size,
    )
    torch.manual_seed(0)
    teacher = BertForMaskedLM._from_config(teacher_config, attn_implementation=attention).eval().requires_grad_(False)
    student_model = BertForMaskedLM._from_config(config.student_config(), attn_implementation=attention)
    return config, teacher, student_model


PHASES = ("teacher forward", "student forward", "loss", "backward", "optimizer")


def timed_steps(step_phases, steps: int, sync=lambda: None) -> dict[str, dict[str, float]]:
    """Mean wall and CPU seconds per phase over `steps` steps after one warm-up step."""
    totals = {clock: dict.fromkeys(PHASES, 0.0) for clock in ("wall", "cpu")}
    for index in range(steps + 1):
        marks = [(time.perf_counter(), time.process_time())]
        for _ in step_phases():
            sync()
            marks.append((time.perf_counter(), time.process_time()))
        if index:
            for name, start, end in zip(PHASES, marks, marks[1:]):
                totals["wall"][name] += end[0] - start[0]
                totals["cpu"][name] += end[1] - start[1]
    return {clock: {name: value / steps for name, value in phases.items()} for clock, phases in totals.items()}


def our_step(config: DistillConfig, teacher_model, student_model, batch: dict, autocast=None):
    """Generator of the phases of one step of distill.train's loop (same components)."""
    teacher = Teacher(teacher_model, config)
    model = CapturingStudent(student_model, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    context = autocast or (lambda: torch.autocast("cpu", enabled=False))
    segments, positions = row_layout(batch["input_ids"], pad_id=0)
    if "segments" in batch:  # a loader batch carries its documents' layout
        segments, positions = batch["segments"], batch["position_ids"]
    allowed = allowed_pairs(segments)
    bias = attention_bias(allowed, torch.bfloat16 if autocast else torch.float32)
    masks = Masks(tokens=batch["attention_mask"], targets=batch["input_ids"][:, :0], pairs=allowed)
    heads = student_model.config.num_attention_heads

    def phases():
        with context():
            teacher_out = teacher(batch["input_ids"], bias, positions, None)
            yield
            student_out = model(batch["input_ids"], bias, positions)
            yield
        total = torch.stack(term_losses(config.terms, student_out, teacher_out, masks, heads, teacher.num_heads)).sum()
        yield
        total.backward()
        yield
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        yield

    return phases


def loop_value_relation(values: torch.Tensor, n: int, heads: int) -> torch.Tensor:
    """One example's value relation over its first n tokens, as the per-example baselines compute it."""
    v = values[:n].view(n, heads, -1).transpose(0, 1)
    return (v @ v.transpose(-1, -2) / math.sqrt(v.shape[-1])).log_softmax(-1)


def baseline_step(teacher_model, student_model, batch: dict):
    """The public re-implementations' step: eager attention, output_attentions=True, values from
    hooks, and KL computed one example at a time over its real tokens."""
    last_t, last_s = len(teacher_model.bert.encoder.layer) - 1, len(student_model.bert.encoder.layer) - 1
    values: dict[str, torch.Tensor] = {}
    teacher_model.bert.encoder.layer[last_t].attention.self.value.register_forward_hook(
        lambda module, inputs, output: values.__setitem__("teacher", output))
    student_model.bert.encoder.layer[last_s].attention.self.value.register_forward_hook(
        lambda module, inputs, output: values.__setitem__("student", output))
    optimizer = torch.optim.AdamW(student_model.parameters(), lr=1e-4)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    heads = student_model.config.num_attention_heads

    def phases():
        with torch.no_grad():
            t_attn = teacher_model.bert(batch["input_ids"], batch["attention_mask"], output_attentions=True).attentions[-1]
        t_values = values["teacher"]
        yield
        s_attn = student_model.bert(batch["input_ids"], batch["attention_mask"], output_attentions=True).attentions[-1]
        s_values = values["student"]
        yield
        total = 0.0
        for b, n in enumerate(lengths):
            t, s = t_attn[b, :, :n, :n], s_attn[b, :, :n, :n]
            total = total + (t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).sum() / (heads * n)
            tv, sv = loop_value_relation(t_values[b], n, heads), loop_value_relation(s_values[b], n, heads)
            total = total + (tv.exp() * (tv - sv)).sum() / (heads * n)
        total = total / len(lengths)
        yield
        total.backward()
        yield
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        yield

    return phases


def bench_cpu_step(shard_dir: Path, batch_size: int = 8, steps: int = 3) -> dict:
    """Phase times of our step and the baseline's on one thread (CPU seconds are immune to other load)."""
    torch.set_num_threads(1)
    shards = open_shard_dir(shard_dir)
    batch = next(iter(ShardBatches(open_split(shards, "train"), batch_size, seed=0, shuffle_buffer=100_000)))
    config, teacher, student = minilm_setup(len(shards.vocab))
    ours = timed_steps(our_step(config, teacher, student, batch), steps)
    config, teacher, student = minilm_setup(len(shards.vocab), attention="eager")
    base = timed_steps(baseline_step(teacher, student, batch), steps)
    torch.set_num_threads(os.cpu_count() or 1)
    return {"ours": ours, "base": base, "tokens": batch["input_ids"].numel(), "batch_size": batch_size,
            "student_params": sum(p.numel() for p in student.parameters())}


def bench_loss(batch_size: int = 64, heads: int = 12, repeats: int = 5) -> dict:
    """The minilm loss alone at a GPU-like batch: ours (vectorised, attention rebuilt from Q and K)
    against a per-example loop over precomputed attention probabilities, one thread, CPU seconds."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(SEQ_LEN // 2, SEQ_LEN + 1, (batch_size,), generator=g)
    tokens = torch.arange(SEQ_LEN)[None, :] < lengths[:, None]
    rand = lambda width: torch.randn(batch_size, SEQ_LEN, width, generator=g)  # noqa: E731
    teacher = {"0.query": rand(768), "0.key": rand(768), "0.value": rand(768)}
    student = {"0.query": rand(384), "0.key": rand(384), "0.value": rand(384)}
    terms = objective_terms("minilm", 1, 1, None, TermSettings(48, 2.0), {})
    masks = Masks(tokens=tokens, targets=torch.zeros(batch_size, 0, dtype=torch.long))
    probs = {name: relation_log_probs(side["0.query"], side["0.key"], heads, tokens[:, None, :]).exp()
             for name, side in (("teacher", teacher), ("student", student))}

    def ours():
        torch.stack(term_losses(terms, student, teacher, masks, heads, heads)).sum()

    def loop():
        total = 0.0
        for b, n in enumerate(lengths.tolist()):
            t, s = probs["teacher"][b, :, :n, :n], probs["student"][b, :, :n, :n]
            total = total + (t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).sum() / (heads * n)
            tv = loop_value_relation(teacher["0.value"][b], n, heads)
            sv = loop_value_relation(student["0.value"][b], n, heads)
            total = total + (tv.exp() * (tv - sv)).sum() / (heads * n)

    timings = {}
    for name, function in (("ours", ours), ("loop", loop)):
        function()
        started = time.process_time()
        for _ in range(repeats):
            function()
        timings[name] = (time.process_time() - started) / repeats
    torch.set_num_threads(os.cpu_count() or 1)
    return {**timings, "batch_size": batch_size}


def model_flops_per_token(config: BertConfig, seq_len: int, layers: int) -> float:
    """Forward FLOPs per token of `layers` encoder layers: matmuls 2 x params plus attention scores and mixing."""
    hidden, ffn = config.hidden_size, config.intermediate_size
    return layers * (2 * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * seq_len * hidden)


def step_throughput(device: torch.device, vocab_size: int, batch_sizes, autocast, sync) -> tuple[dict[int, float], int | None]:
    """Seconds per minilm-23m step (wall, mean of 5 after a warm-up) for each batch size, doubling
    until one does not fit; returns (seconds by batch size, the largest batch that fitted)."""
    seconds, largest = {}, None
    for batch_size in batch_sizes:
        try:
            config, teacher, student = minilm_setup(vocab_size)
            teacher.to(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
            student.to(device)
            ids = torch.randint(5, vocab_size, (batch_size, SEQ_LEN), device=device)
            batch = {"input_ids": ids, "attention_mask": ids != 0}
            seconds[batch_size] = sum(timed_steps(our_step(config, teacher, student, batch, autocast), 5, sync)["wall"].values())
            largest = batch_size
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            config = teacher = student = batch = ids = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return seconds, largest


def bench_gpu(vocab_size: int) -> str:
    """bf16 throughput, MFU and the largest batch for the minilm-23m step; needs CUDA."""
    if not torch.cuda.is_available():
        return "no GPU in this run: (c) skipped (the code measures bf16 tokens/s, MFU and the largest batch that fits)."
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = float(os.environ.get("BENCH_PEAK_TFLOPS", 0)) * 1e12 or next(
        (value for key, value in PEAK_BF16.items() if key in name), 0.0)
    seconds, largest = step_throughput(device, vocab_size, (64, 128, 256, 512, 1024, 2048),
                                       lambda: torch.autocast("cuda", dtype=torch.bfloat16), torch.cuda.synchronize)
    teacher_config, student_config = BertConfig(vocab_size=vocab_size), minilm_setup(vocab_size)[0].student_config()
    flops = (model_flops_per_token(teacher_config, SEQ_LEN, 12)
             + 3 * model_flops_per_token(student_config, SEQ_LEN, student_config.num_hidden_layers))
    lines = [f"GPU: {name}; peak bf16 {peak / 1e12:.0f} TFLOP/s (dense)" if peak else f"GPU: {name}; peak unknown (set BENCH_PEAK_TFLOPS)",
             "", "| batch | step ms | tokens/s | MFU |", "|---:|---:|---:|---:|"]
    for batch_size, step_seconds in seconds.items():
        rate = batch_size * SEQ_LEN / step_seconds
        mfu = f"{rate * flops / peak:.1%}" if peak else "n/a"
        lines.append(f"| {batch_size} | {step_seconds * 1e3:.1f} | {rate:,.0f} | {mfu} |")
    lines.append(f"\nLargest batch that fits (of 64..2048, doubling): {largest}. MFU counts the teacher forward and the "
                 "student forward and backward (3x forward): matmuls and attention, embeddings and the layers' "
                 "skipped tails excluded.")
    return "\n".join(lines)


def run(data_path: Path, workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    shard_dir = build_nsmc_shards(data_path, workdir)
    build_seconds = time.perf_counter() - started
    loader = bench_loader(shard_dir)
    step = bench_cpu_step(shard_dir)
    loss = bench_loss()
    gpu = bench_gpu(len(open_shard_dir(shard_dir).vocab))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ours, base = step["ours"]["cpu"], step["base"]["cpu"]
    ours_total, base_total = sum(ours.values()), sum(base.values())
    ours_wall, base_wall = sum(step["ours"]["wall"].values()), sum(step["base"]["wall"].values())
    phase_rows = "\n".join(
        f"| {name} | {ours[name] * 1e3:,.0f} ms ({ours[name] / ours_total:.0%}) | {base[name] * 1e3:,.0f} ms ({base[name] / base_total:.0%}) |"
        for name in PHASES
    )
    return f"""## Distillation (`distill.train` loader and step)

Command: `make bench` or `python -m bench.bench_distill`. Machine: {machine_line()}, torch {torch.__version__}
(CPU build). Data: the NSMC reviews, cleaned, WordPiece vocabulary of {VOCAB_SIZE:,} trained on them, packed to
{SEQ_LEN} tokens: {loader['rows']:,} training sequences in {loader['shards']} shards (built in {build_seconds:.0f} s,
not part of any figure below).

### (a) Loader: shards to masked batches (batch 256, shuffle buffer 100,000, 80/10/10 masking)

One process, one thread (`torch.set_num_threads(1)`, no DataLoader workers), 10 s each. Tokens are
batch positions delivered (256 x {SEQ_LEN} per batch). Per core = tokens / CPU seconds of the process.

| | tokens/s (wall) | tokens/s per core (CPU time) |
|---|---:|---:|
| `distill.data.ShardBatches` | {loader['ours_wall']:,.0f} | {loader['ours_cpu']:,.0f} |
| baseline: HF `DataCollatorForLanguageModeling` on the same rows | {loader['base_wall']:,.0f} | {loader['base_cpu']:,.0f} |

Target >= {LOADER_TARGET / 1e6:.0f}M masked tokens/s per core: **{loader['ours_cpu'] / LOADER_TARGET:.1f}x the target**;
{loader['ours_cpu'] / loader['base_cpu']:.0f}x the baseline.

### (b) One `minilm-23m` step on the CPU (teacher: 12-layer base BERT, random init; seq {SEQ_LEN}, batch {step['batch_size']})

Student: {step['student_params'] / 1e6:.1f}M parameters; objective minilm (attention + value-relation KL, last
teacher layer to last student layer), fp32, one thread, mean of 3 steps after a warm-up. Times are CPU
seconds of the process (the development machine is shared, so wall time includes waiting for a core;
wall totals are given too). Baseline: the public re-implementations' way (eager attention with
`output_attentions=True`, values from hooks, the KL computed one example at a time over its real
tokens) on the same batch.

| phase | ours | baseline |
|---|---:|---:|
{phase_rows}
| **step (CPU time)** | **{ours_total * 1e3:,.0f} ms = {step['tokens'] / ours_total:,.0f} tokens/s** | {base_total * 1e3:,.0f} ms = {step['tokens'] / base_total:,.0f} tokens/s |
| step (wall) | {ours_wall * 1e3:,.0f} ms | {base_wall * 1e3:,.0f} ms |

Ours takes {ours_total / base_total:.2f}x the baseline's CPU time per step ({base_total / ours_total:.2f}x its speed). On the
CPU the teacher forward dominates ({ours['teacher forward'] / ours_total:.0%} of the step) and the loss is
{ours['loss'] / ours_total:.0%} of it. The loss alone at batch {loss['batch_size']} (teacher 768 and student 384 wide,
12 heads, random real lengths 64..128), one thread: ours {loss['ours'] * 1e3:,.0f} ms (rebuilding the attention from Q and
K included), the per-example loop over precomputed attention probabilities {loss['loop'] * 1e3:,.0f} ms
({loss['ours'] / loss['loop']:.1f}x less than ours). On a CPU the loop wins here: each example's 12 x n x n
tensors stay in cache while the batched ones (64 x 12 x 128 x 128 floats, 50 MB each) stream through
memory. The vectorised form is for accelerators, where the loop costs a kernel launch per example and
term (and, under XLA, a new graph per distinct length); it cannot be measured on this machine.

### (c) GPU

{gpu}

Peak memory of the benchmark process: {peak_mib:,.0f} MiB.
"""


def quick(workdir: Path) -> str:
    """Every part briefly, on the embedded sample corpus: a smoke test of the benchmark, no figures."""
    from pipeline.sample_corpus import sample_records

    texts = [t for t in (clean_text(record["text"]) for record in sample_records(0)) if len(t) >= 10]
    shard_dir = build_shards(texts, workdir, vocab_size=2_000, train_shards=2)
    loader = bench_loader(shard_dir, batch_size=32, seconds=1.0)
    step = bench_cpu_step(shard_dir, batch_size=2, steps=1)
    loss = bench_loss(batch_size=4, repeats=1)
    return (f"quick run on the sample corpus ({len(texts):,} texts, {loader['rows']:,} sequences): loader "
            f"{loader['ours_cpu']:,.0f} tokens/s per core (baseline {loader['base_cpu']:,.0f}); one minilm-23m CPU step "
            f"{sum(step['ours']['cpu'].values()):.2f} s (baseline {sum(step['base']['cpu'].values()):.2f} s); "
            f"loss alone {loss['ours'] * 1e3:.0f} ms (loop {loss['loop'] * 1e3:.0f} ms). Not a benchmark: see "
            "BENCHMARKS.md for the NSMC figures.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_distill", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--quick", action="store_true",
                        help="run every part briefly on the embedded sample corpus (no data needed, nothing written "
                             "to bench/results)")
    parser.add_argument("--workdir", type=Path, default=WORK_DIR / "distill", help="where the shards are built")
    args = parser.parse_args(argv)
    if args.quick:
        print(quick(args.workdir / "quick"))
        return 0
    if not NSMC_PATH.exists():
        print(f"python -m bench.bench_distill: error: {NSMC_PATH} is absent (set NSMC_PATH, or use --quick)",
              file=sys.stderr)
        return 2
    section = run(NSMC_PATH, args.workdir)
    print(section)
    (RESULTS_DIR / "distill.md").write_text(section, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
