"""Benchmark of distill.extend's initialisations: regression vs mean vs subword-mean, on real embeddings.

Why this setup: the claim to test is KoEnBERT's, that a linear map fitted on the tokens two
vocabularies share carries the donor's embeddings into the base's space better than a
generic initialisation. That needs two models whose embedding spaces genuinely share
structure but were learnt separately, with different tokenizers. Here both are trained on the
real NSMC reviews (no hub, no pretrained models on this machine):

- base: a cased WordPiece vocabulary of BASE_VOCAB (the ALPHABET most frequent characters)
  trained by `pipeline.tokenize` on the first 60% of the reviews, and a BERT (BASE_SHAPE)
  trained by masked-LM on them;
- donor: a vocabulary of DONOR_VOCAB trained on the last 60% (the middle 20% shared), a BERT
  of another width (DONOR_SHAPE) trained the same way with another seed;
- `pipeline.tokenize --extend base --add-vocab-from donor` and `distill.extend`.

The tokens both vocabularies share (through extension.json's id map, special tokens left out)
are split with distill.extend's seeded held-out choice; on the held-out ones the true base
embedding is known, and each initialisation's row is compared with it (cosine, and R² for the
regression, fitted on the other shared tokens). `subword-mean` splits a held-out token with the
held-out tokens removed from the vocabulary (as if it were new). Mean cosine to the truth:
the higher, the closer the new rows start to where the base model would have put them.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import WORK_DIR, machine_line, read_nsmc_texts, run_stage

BASE_VOCAB, DONOR_VOCAB = 10000, 14000
ALPHABET = 1500  # --limit-alphabet: characters (and their ## forms) kept, so most entries are multi-character
BASE_SHAPE, DONOR_SHAPE = (2, 48, 4), (2, 64, 4)  # layers, hidden, heads
STEPS, BATCH, SEQ_LEN, LR = 2000, 32, 64, 2e-3
HELD_OUT, SEED = 0.1, 0
COMMAND = "python -m bench.bench_extend"


def train_mlm(tokenizer_dir: Path, texts: list[str], shape: tuple[int, int, int], seed: int, output: Path) -> dict:
    """A BERT masked-LM trained from scratch on the texts packed into rows (distill.masking's 80/10/10
    masking, AdamW, linear decay), saved with its tokenizer; returns its last losses and seconds."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertForMaskedLM

    from distill.masking import mask_tokens, masking_spec
    from tokenizer_training.loading import load_tokenizer
    from transforms.packing import encode_texts, pack_concat

    torch.set_num_threads(1)  # on the shared 2-core machine a second thread mostly spins in OpenMP barriers
    loaded = load_tokenizer(str(tokenizer_dir), verify=False)
    backend = Tokenizer.from_str(loaded.files["tokenizer.json"].decode("utf-8"))
    backend.no_truncation()
    backend.no_padding()
    ids = loaded.special_ids
    flat, lengths = encode_texts(backend, texts)
    rows, _ = pack_concat(flat, lengths, SEQ_LEN, ids["cls"], ids["sep"], ids["pad"])
    rows = torch.from_numpy(rows.astype(np.int64))
    torch.manual_seed(seed)
    layers, hidden, heads = shape
    model = BertForMaskedLM(BertConfig(vocab_size=len(loaded.vocab), hidden_size=hidden, num_hidden_layers=layers,
                                       num_attention_heads=heads, intermediate_size=4 * hidden,
                                       max_position_embeddings=SEQ_LEN, pad_token_id=ids["pad"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 100) * (1 - step / STEPS))
    spec = masking_spec(loaded.vocab, ids, SEQ_LEN)
    generator = torch.Generator().manual_seed(seed)
    losses, started = [], time.perf_counter()
    model.train()
    for _ in range(STEPS):
        batch = rows[torch.randint(len(rows), (BATCH,), generator=generator)]
        inputs, labels = mask_tokens(batch, spec, generator)
        hidden = model.bert(input_ids=inputs, attention_mask=batch != ids["pad"]).last_hidden_state
        masked = labels != -100  # logits at the masked positions only: the vocabulary-wide matmul is the cost
        loss = torch.nn.functional.cross_entropy(model.cls(hidden[masked]), labels[masked])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if len(losses) % 100 == 0:
            print(f"{output.name}: step {len(losses)}, loss {np.mean(losses[-100:]):.3f}", file=sys.stderr, flush=True)
    model.save_pretrained(str(output))
    for name, data in loaded.files.items():
        (output / name).write_bytes(data)
    return {"rows": len(rows), "first_loss": float(np.mean(losses[:50])), "last_loss": float(np.mean(losses[-50:])),
            "seconds": time.perf_counter() - started}


def compare_inits(base_dir: Path, donor_dir: Path, koen_dir: Path) -> dict:
    """Each initialisation's mean cosine to the true base rows of the held-out shared tokens."""
    from transformers import AutoModelForMaskedLM

    from distill import extend
    from tokenizer_training.extend import continuation_prefix, read_extension, tokenizer_state
    from tokenizer_training.loading import load_tokenizer

    extension = read_extension(str(koen_dir))
    tokenizer = load_tokenizer(str(koen_dir), verify=False)
    base = extend.model_rows(AutoModelForMaskedLM.from_pretrained(str(base_dir)))
    donor = extend.model_rows(AutoModelForMaskedLM.from_pretrained(str(donor_dir)))
    new_ids = [token_id for _, token_id in extension["added"]]
    ordinary = extend.ordinary_ids(tokenizer.vocab, extension["base"]["vocab_size"], set(tokenizer.special_ids.values()))
    base_ids = np.setdiff1d(ordinary, np.asarray(new_ids, dtype=np.int64))
    pairs = extend.shared_pairs(extension["id_map"], set(new_ids), base_ids)
    held = extend.held_out_mask(len(pairs), HELD_OUT, SEED)
    hidden = base.embeddings.shape[1]
    truth = base.embeddings[pairs[held, 1]]
    weights = extend.fit_affine(donor.stacked()[pairs[~held, 0]], base.stacked()[pairs[~held, 1]])
    regression = extend.apply_affine(weights, donor.stacked()[pairs[held, 0]])[:, :hidden]
    visible = np.setdiff1d(base_ids, pairs[held, 1])
    mean = np.repeat(base.embeddings[visible].mean(axis=0, keepdims=True), len(truth), axis=0)
    subword, split = extend.subword_mean_rows(base, tokenizer.vocab, visible, pairs[held, 1].tolist(),
                                              continuation_prefix(tokenizer_state(tokenizer)))
    results = {"regression": extend.fit_quality(regression, truth), "mean": extend.fit_quality(mean, truth),
               "subword-mean": extend.fit_quality(subword[:, :hidden], truth)}
    results["subword-mean"]["no_pieces"] = split
    single = sum(len(tokenizer.vocab[token_id].removeprefix("##")) == 1 for token_id in pairs[held, 1].tolist())
    return {"shared": len(pairs), "held_out": int(held.sum()), "single_characters": single,
            "new_tokens": len(new_ids), "results": results}


def run(data_path: Path, workdir: Path) -> str:
    from pipeline import tokenize
    from distill import extend
    from transforms.clean import clean_text

    workdir.mkdir(parents=True, exist_ok=True)
    texts = [text for text in map(clean_text, read_nsmc_texts(data_path)) if text]
    cut_base, cut_donor = int(0.6 * len(texts)), int(0.4 * len(texts))
    parts = {"base": texts[:cut_base], "donor": texts[cut_donor:]}
    facts: dict = {"documents": len(texts)}
    for name, vocab_size in (("base", BASE_VOCAB), ("donor", DONOR_VOCAB)):
        corpus = workdir / f"{name}.txt"
        corpus.write_text("".join(text.replace("\n", " ") + "\n" for text in parts[name]), encoding="utf-8")
        assert tokenize.main(["--input", str(corpus), "--format", "text", "--output", str(workdir / f"{name}-tok"),
                              "--vocab-size", str(vocab_size), "--limit-alphabet", str(ALPHABET), "--overwrite",
                              "--quiet"]) == 0
    assert tokenize.main(["--extend", str(workdir / "base-tok"), "--add-vocab-from", str(workdir / "donor-tok"),
                          "--output", str(workdir / "koen-tok"), "--overwrite", "--quiet"]) == 0
    for name, shape, seed in (("base", BASE_SHAPE, 1), ("donor", DONOR_SHAPE, 2)):
        facts[name] = train_mlm(workdir / f"{name}-tok", parts[name], shape, seed, workdir / f"{name}-bert")
        print(f"{name}: {facts[name]}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    assert extend.main(["--model", str(workdir / "base-bert"), "--tokenizer", str(workdir / "koen-tok"), "--init",
                        "regression", "--donor", str(workdir / "donor-bert"), "--output", str(workdir / "koen-bert"),
                        "--overwrite", "--quiet", "--json"]) == 0
    facts["extend_seconds"] = time.perf_counter() - started
    facts["extend_report"] = json.loads((workdir / "koen-bert" / extend.REPORT_FILE).read_text())
    facts["comparison"] = compare_inits(workdir / "base-bert", workdir / "donor-bert", workdir / "koen-tok")
    (workdir / "outcome.json").write_text(json.dumps(facts, indent=2))
    return section(facts)


def section(facts: dict) -> str:
    comparison, results = facts["comparison"], facts["comparison"]["results"]
    report = facts["extend_report"]
    rows = "\n".join(f"| `{name}` | {values['cosine']:.3f} | {values['r2']:.3f} |" for name, values in results.items())
    best = max(results, key=lambda name: results[name]["cosine"])
    verdict = ("meets" if best == "regression" and results["regression"]["cosine"] > results["mean"]["cosine"]
               else "does not meet")
    base, donor = facts["base"], facts["donor"]
    return f"""## Vocabulary extension: initialising the new rows (`distill.extend`)

Command: `{COMMAND}`. {machine_line()}; the machine was shared with other work (times are indicative only).

Setup (docstring of `bench/bench_extend.py`): the {facts['documents']:,} cleaned NSMC reviews; a base
vocabulary of {BASE_VOCAB:,} (`pipeline.tokenize`, first 60% of the reviews) and a donor vocabulary of
{DONOR_VOCAB:,} (last 60%, so 20% of the text is shared), each keeping its {ALPHABET:,} most frequent
characters; a BERT of each, trained from scratch by
masked-LM for {STEPS:,} steps of {BATCH} rows x {SEQ_LEN} tokens: base {BASE_SHAPE[0]}x{BASE_SHAPE[1]}
(MLM loss {base['first_loss']:.2f} -> {base['last_loss']:.2f}, {base['seconds']:.0f} s), donor
{DONOR_SHAPE[0]}x{DONOR_SHAPE[1]} (another width and seed; {donor['first_loss']:.2f} -> {donor['last_loss']:.2f},
{donor['seconds']:.0f} s). `pipeline.tokenize --extend` added {comparison['new_tokens']:,} donor tokens;
{comparison['shared']:,} ordinary tokens are shared, of which {comparison['held_out']:,} (seeded
{HELD_OUT:.0%}) are held out ({comparison['single_characters']:,} of them single characters). On those, each initialisation's row is compared with the base model's
true row (the regression is fitted on the other shared tokens; `subword-mean` splits a held-out
token without the held-out tokens, {results['subword-mean']['no_pieces']:,} of them had no pieces
and got the mean):

| `--init` | mean cosine to the true row | R² |
|---|---|---|
{rows}

Target: `regression` closer to the true rows than `mean` (KoEnBERT's reason for the regression):
**{verdict}** (best: `{best}`). `distill.extend --init regression` itself, on the same split, reported
R² {report['fit']['held_out']['r2']:.3f} and cosine {report['fit']['held_out']['cosine']:.3f} on the
held-out tokens, grew the model to {report['vocab_size']:,} tokens in {facts['extend_seconds']:.1f} s, and
its largest difference to the base model on base tokens was {report['base_max_abs_difference']:.1e}.
The mean row has a fair cosine because trained embeddings share a common direction; R² below 0
means a prediction further from the truth than the held-out tokens' own mean. `subword-mean` is
the mean of a token's pieces (mostly `##` continuations and characters); here it lands further
from the true rows than the plain mean. Both models are small and briefly trained (the MLM losses
above), so these numbers describe embeddings early in training, not published BERTs.
"""


def render(workdir: Path = WORK_DIR / "extend") -> str:
    """The section again from a finished run's outcome.json (after a change of wording only)."""
    return section(json.loads((workdir / "outcome.json").read_text()))


if __name__ == "__main__":
    raise SystemExit(run_stage("extend", run))
