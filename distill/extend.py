"""`python -m distill.extend`: grow a BERT to an extended vocabulary, the new rows initialised.

    python -m distill.extend --model ko-bert --tokenizer koen-tokenizer --donor en-bert \\
        --init regression --output koen-bert

Why: after `pipeline.tokenize --extend` the vocabulary has tokens the model has no embedding
for. KoEnBERT (seed 002) initialised them by a regression fitted on the tokens both
vocabularies share, from the English model's embedding space into the Korean model's, so the
new rows start where the base model would have put them rather than at random.

The word embedding matrix, the tied MLM decoder and the decoder bias grow to the new size.
Every base row is copied unchanged, so on text made only of base tokens the grown model's
hidden states and its MLM logits over the base ids are the base model's. The new rows (the
appended ids and any [unused] slot the extension filled) come from `--init`:

- `regression`: a least-squares affine map from the donor's [embedding, bias] to the base's
  [embedding, bias], fitted on the shared tokens (same string in both vocabularies, through
  extension.json's id map; special and [unused] tokens left out), applied to the donor's rows
  of the new tokens. A seeded `--held-out` share of the shared tokens is kept out of the fit;
  the report gives the map's R² and mean cosine to the true base rows on them.
- `mean`: the mean of the base's ordinary rows (and bias), the same for every new token.
- `subword-mean`: the mean of the base rows of the pieces the new token splits into under
  the base vocabulary (BERT's greedy longest-match WordPiece); the mean where it has none.

The output is a model directory (config.json, model.safetensors, the extended tokenizer's four
files, a copy of extension.json, extend_report.json written last) that AutoModelForMaskedLM
and AutoTokenizer load. See docs/koenbert.md.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import cli

COMMAND = "distill.extend"
INITS = ("regression", "mean", "subword-mean")
REPORT_FILE = "extend_report.json"
REPORT_FORMAT = "koforge-extend-report/1"
MODEL_FILES = ("config.json", "model.safetensors")


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(COMMAND, "Grow a BERT masked-LM to a vocabulary made by pipeline.tokenize --extend: "
                                "base rows kept, new embedding rows (tied decoder and bias) initialised by --init.",
                                epilog="See docs/koenbert.md.")
    add = parser.add_argument
    add("--model", required=True, help="the base BERT (directory or hub id) whose vocabulary was extended")
    add("--tokenizer", required=True, help="the extended tokenizer directory (with extension.json)")
    add("--donor", help="--init regression: the BERT of the vocabulary the tokens came from (--add-vocab-from)")
    add("--init", required=True, choices=INITS, help="how the new rows start")
    add("--held-out", type=cli.number(float, 0, 1, low_open=True, high_open=True), default=0.1,
        help="--init regression: share of the shared tokens kept out of the fit to measure it")
    add("--seed", type=cli.number(int, 0), default=0, help="--init regression: which shared tokens are held out")
    add("--output", required=True, help="model directory to write")
    cli.add_output_options(parser, "model files and report")
    cli.add_reporting_options(parser)
    return parser


# ---------------------------------------------------------------- the new rows


@dataclass(frozen=True)
class Rows:
    """What a model contributes to the initialisation: its word embeddings and MLM decoder bias (float64)."""

    embeddings: np.ndarray  # [vocab, hidden]
    bias: np.ndarray  # [vocab]

    def stacked(self) -> np.ndarray:
        """[embedding, bias] per row: the regression's targets (and, with a constant, its inputs)."""
        return np.concatenate([self.embeddings, self.bias[:, None]], axis=1)


def ordinary_ids(vocab: list[str], count: int, special: set[int]) -> np.ndarray:
    """Ids below `count` that are neither special nor [unused] slots: the rows a mean may use."""
    from tokenizer_training.extend import UNUSED

    return np.asarray([index for index in range(count) if index not in special and not UNUSED.match(vocab[index])],
                      dtype=np.int64)


def mean_rows(base: Rows, ordinary: np.ndarray, new_ids: list[int]) -> np.ndarray:
    """Every new token: the mean [embedding, bias] of the base's ordinary rows."""
    return np.repeat(base.stacked()[ordinary].mean(axis=0, keepdims=True), len(new_ids), axis=0)


def wordpiece_pieces(word: str, index: dict[str, int], prefix: str, continuation: bool) -> list[int] | None:
    """BERT's greedy longest-match-first split of one word (a continuation when `continuation`),
    or None when some part matches no entry (the word would be [UNK])."""
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = (prefix if start > 0 or continuation else "") + word[start:end]
            if piece in index:
                pieces.append(index[piece])
                start = end
                break
        else:
            return None
    return pieces


def subword_mean_rows(base: Rows, vocab: list[str], base_ids: np.ndarray, new_ids: list[int],
                      prefix: str) -> tuple[np.ndarray, int]:
    """Every new token: the mean [embedding, bias] of the base pieces (among `base_ids`) it splits
    into; the mean row where it splits into none. Returns (rows, how many fell back to the mean)."""
    index = {vocab[token_id]: int(token_id) for token_id in base_ids}
    stacked, fallback = base.stacked(), 0
    rows = np.empty((len(new_ids), stacked.shape[1]))
    mean = stacked[base_ids].mean(axis=0)
    for row, token_id in enumerate(new_ids):
        token = vocab[token_id]
        continuation = token.startswith(prefix) and len(token) > len(prefix)
        pieces = wordpiece_pieces(token[len(prefix):] if continuation else token, index, prefix, continuation)
        if pieces:
            rows[row] = stacked[pieces].mean(axis=0)
        else:
            rows[row] = mean
            fallback += 1
    return rows, fallback


def fit_affine(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Least squares W with [inputs, 1] @ W ≈ targets."""
    design = np.concatenate([inputs, np.ones((len(inputs), 1))], axis=1)
    return np.linalg.lstsq(design, targets, rcond=None)[0]


def apply_affine(weights: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    return np.concatenate([inputs, np.ones((len(inputs), 1))], axis=1) @ weights


def fit_quality(predicted: np.ndarray, actual: np.ndarray) -> dict:
    """R² over all embedding columns (around the held-out mean) and mean cosine to the true embeddings."""
    residual = ((actual - predicted) ** 2).sum()
    total = ((actual - actual.mean(axis=0)) ** 2).sum()
    norms = np.linalg.norm(predicted, axis=1) * np.linalg.norm(actual, axis=1)
    cosine = (predicted * actual).sum(axis=1) / np.maximum(norms, 1e-12)
    return {"r2": float(1 - residual / total), "cosine": float(cosine.mean()), "tokens": len(actual)}


def shared_pairs(id_map: list[int], new_ids: set[int], base_ids: np.ndarray) -> np.ndarray:
    """(donor id, base id) of the shared tokens: mapped onto an ordinary base row the extension did not replace."""
    allowed = set(base_ids.tolist()) - new_ids
    return np.asarray([(donor, target) for donor, target in enumerate(id_map) if target in allowed],
                      dtype=np.int64).reshape(-1, 2)


def held_out_mask(count: int, share: float, seed: int) -> np.ndarray:
    """A seeded choice of round(share * count) of the shared tokens (at least one, never all)."""
    held = min(count - 1, max(1, round(share * count)))
    mask = np.zeros(count, dtype=bool)
    mask[np.random.default_rng([seed, 18]).permutation(count)[:held]] = True
    return mask


def regression_rows(base: Rows, donor: Rows, id_map: list[int], new_ids: list[int], base_ids: np.ndarray,
                    share: float, seed: int) -> tuple[np.ndarray, dict]:
    """The affine map donor [embedding, bias] -> base [embedding, bias] fitted on the shared tokens
    (less the held-out share), applied to the mean donor row of each new token's donor ids."""
    pairs = shared_pairs(id_map, set(new_ids), base_ids)
    features = donor.stacked().shape[1] + 1
    if len(pairs) < 2 * features:
        raise ValueError(f"--init regression: only {len(pairs):,} tokens are shared by the two vocabularies, too few "
                         f"to fit a map of {features:,} inputs (need {2 * features:,}); use --init subword-mean")
    held = held_out_mask(len(pairs), share, seed)
    inputs, targets = donor.stacked()[pairs[:, 0]], base.stacked()[pairs[:, 1]]
    weights = fit_affine(inputs[~held], targets[~held])
    hidden = base.embeddings.shape[1]
    quality = fit_quality(apply_affine(weights, inputs[held])[:, :hidden], targets[held][:, :hidden])
    sources: dict[int, list[int]] = {}
    for donor_id, target in enumerate(id_map):
        sources.setdefault(target, []).append(donor_id)
    donor_rows = np.stack([donor.stacked()[sources[token_id]].mean(axis=0) for token_id in new_ids])
    return apply_affine(weights, donor_rows), {"shared_tokens": len(pairs), "fitted_on": int((~held).sum()),
                                               "held_out": quality}


# ---------------------------------------------------------------- models


def model_rows(model) -> Rows:
    """The word embeddings and decoder bias of a BertForMaskedLM with a tied decoder."""
    decoder = model.cls.predictions.decoder
    if decoder.weight.data_ptr() != model.bert.embeddings.word_embeddings.weight.data_ptr():
        raise ValueError("the model's MLM decoder is not tied to its word embeddings (tie_word_embeddings false); "
                         "distill.extend grows tied BERTs only")
    return Rows(model.bert.embeddings.word_embeddings.weight.detach().double().numpy(),
                model.cls.predictions.bias.detach().double().numpy())


def grown_model(model, new_rows: np.ndarray, new_ids: list[int], vocab_size: int):
    """A BertForMaskedLM of `vocab_size` with the model's weights, base rows unchanged, the new rows set."""
    import torch
    from transformers import BertForMaskedLM

    config = model.config.__class__.from_dict({**model.config.to_dict(), "vocab_size": vocab_size})
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    old = state["bert.embeddings.word_embeddings.weight"]
    embeddings = torch.zeros(vocab_size, old.shape[1], dtype=old.dtype)
    bias = torch.zeros(vocab_size, dtype=old.dtype)
    embeddings[:len(old)] = old
    bias[:len(old)] = state["cls.predictions.bias"]
    rows = torch.from_numpy(new_rows)
    embeddings[new_ids] = rows[:, :-1].to(old.dtype)
    bias[new_ids] = rows[:, -1].to(old.dtype)
    state.update({"bert.embeddings.word_embeddings.weight": embeddings, "cls.predictions.decoder.weight": embeddings,
                  "cls.predictions.bias": bias, "cls.predictions.decoder.bias": bias})
    grown = BertForMaskedLM(config)
    grown.load_state_dict(state)
    grown.tie_weights()
    return grown.eval()


def check_base_model(model, model_dir: str, extension: dict, vocab: list[str]) -> None:
    """The model must be the extension's base: its size, and its tokenizer's tokens where it ships one."""
    from tokenizer_training.loading import model_vocabulary

    base_size, filled = extension["base"]["vocab_size"], set(extension["filled_unused"])
    if model.config.vocab_size != base_size:
        raise ValueError(f"--model {model_dir} has vocab_size {model.config.vocab_size:,}, the extension's base "
                         f"{extension['base']['source']} {base_size:,}: give the model the tokenizer was extended from")
    own = model_vocabulary(model_dir, "--model")
    if own is not None:
        differ = [index for index in range(base_size) if index not in filled and own[index] != vocab[index]]
        if differ:
            raise ValueError(f"--model {model_dir}'s tokenizer differs from the extension's base at {len(differ):,} "
                             f"ids (first {differ[0]}: {own[differ[0]]!r} vs {vocab[differ[0]]!r})")


def check_donor(donor, donor_dir: str, extension: dict) -> None:
    """The donor must be the model of the vocabulary the tokens came from: its size, its tokenizer's fingerprint."""
    import tempfile

    from tokenizer_training.extend import files_fingerprint
    from tokenizer_training.loading import load_tokenizer, read_tokenizer_sources, resolve_directory, has_tokenizer

    size = len(extension["id_map"])
    if donor.config.vocab_size != size:
        raise ValueError(f"--donor {donor_dir} has vocab_size {donor.config.vocab_size:,}, the extension's source "
                         f"{extension['source']['source']} {size:,}: give the model of --add-vocab-from's vocabulary")
    if has_tokenizer(read_tokenizer_sources(resolve_directory(donor_dir, "--donor"))):
        with tempfile.TemporaryDirectory() as scratch:
            fingerprint = files_fingerprint(load_tokenizer(donor_dir, "--donor", verify=False).files, Path(scratch) / "t")
        if fingerprint != extension["source"]["fingerprint"]:
            raise ValueError(f"--donor {donor_dir}'s tokenizer is not the extension's source "
                             f"{extension['source']['source']} (fingerprints differ)")


def new_rows(args: argparse.Namespace, model, extension: dict, vocab: list[str], special: set[int],
             prefix: str) -> tuple[np.ndarray, list[int], dict]:
    """(rows [embedding, bias] of the new ids, the new ids, what the report says about them)."""
    from distill.models import load_teacher

    base = model_rows(model)
    base_size = extension["base"]["vocab_size"]
    new_ids = [token_id for _, token_id in extension["added"]]
    ordinary = ordinary_ids(vocab, base_size, special)
    base_ids = np.setdiff1d(ordinary, np.asarray(new_ids, dtype=np.int64))
    if args.init == "mean":
        return mean_rows(base, base_ids, new_ids), new_ids, {}
    if args.init == "subword-mean":
        rows, fallback = subword_mean_rows(base, vocab, base_ids, new_ids, prefix)
        return rows, new_ids, {"no_pieces": fallback}
    donor, _ = load_teacher(args.donor, "--donor")
    check_donor(donor, args.donor, extension)
    rows, fit = regression_rows(base, model_rows(donor), extension["id_map"], new_ids, base_ids, args.held_out,
                                args.seed)
    return rows, new_ids, fit


def extend_model(args: argparse.Namespace, progress: cli.Progress) -> dict:
    """Check, grow, verify against the base, write the directory; the report."""
    import torch

    from distill.export import export_student
    from distill.models import load_teacher
    from tokenizer_training.extend import EXTENSION_FILE, continuation_prefix, read_extension, tokenizer_state
    from tokenizer_training.loading import load_tokenizer
    from transforms import storage

    started = time.perf_counter()
    if (args.donor is None) == (args.init == "regression"):
        raise ValueError("--init regression needs --donor DONOR_BERT_DIR" if args.donor is None
                         else f"--donor only applies to --init regression, not {args.init}")
    extension = read_extension(args.tokenizer)
    tokenizer = load_tokenizer(args.tokenizer, "--tokenizer")
    if len(tokenizer.vocab) != extension["vocab_size"]:
        raise ValueError(f"{args.tokenizer}: {len(tokenizer.vocab):,} tokens, extension.json says "
                         f"{extension['vocab_size']:,}")
    if args.init == "regression" and not extension["id_map"]:
        raise ValueError(f"{args.tokenizer} added a corpus's words (pipeline.tokenize --add-tokens): no donor model "
                         "has rows for them; use --init subword-mean or mean")
    model, _ = load_teacher(args.model, "--model")
    check_base_model(model, args.model, extension, tokenizer.vocab)
    special = set(tokenizer.special_ids.values())
    rows, new_ids, fit = new_rows(args, model, extension, tokenizer.vocab, special,
                                  continuation_prefix(tokenizer_state(tokenizer)))
    grown = grown_model(model, rows, new_ids, len(tokenizer.vocab))
    difference = base_difference(model, grown, set(new_ids))
    progress.say(f"grown to {len(tokenizer.vocab):,} tokens; on base-only text the largest difference to the base "
                 f"model is {difference:.2e}")
    output = Path(args.output)
    staging = Path(storage.staging_dir(str(output)))
    storage.delete(str(staging))
    try:
        export_student(grown, tokenizer.files, staging / "model")
        (staging / "model" / EXTENSION_FILE).write_bytes(storage.read_bytes(storage.join(args.tokenizer, EXTENSION_FILE)))
        names = sorted(path.name for path in (staging / "model").iterdir())
        storage.publish(str(staging), str(output), [(str(staging / "model" / name), name) for name in names],
                        marker=REPORT_FILE)
        report = {
            "format": REPORT_FORMAT, "model": args.model, "tokenizer": args.tokenizer, "donor": args.donor,
            "init": args.init, "base_vocab_size": extension["base"]["vocab_size"], "vocab_size": len(tokenizer.vocab),
            "new_rows": len(new_ids), "base_max_abs_difference": difference, "fit": fit,
            "torch": torch.__version__, "seconds": round(time.perf_counter() - started, 3),
        }
        storage.write_json_atomic(str(output / REPORT_FILE), report, sort_keys=False)
    finally:
        storage.delete(str(staging))
    return report


def base_difference(base, grown, new_ids: set[int]) -> float:
    """The largest |difference| of hidden states and of MLM logits over the kept base ids between
    the two models on a probe batch of kept base tokens: 0 up to float rounding when the growth is right."""
    import torch

    size = base.config.vocab_size
    usable = torch.tensor([index for index in range(size) if index not in new_ids])
    generator = torch.Generator().manual_seed(0)
    length = min(32, base.config.max_position_embeddings)
    ids = usable[torch.randint(len(usable), (4, length), generator=generator)]
    with torch.no_grad():
        before = base(input_ids=ids, output_hidden_states=True)
        after = grown(input_ids=ids, output_hidden_states=True)
    hidden = max(float((a - b).abs().max()) for a, b in zip(before.hidden_states, after.hidden_states))
    return max(hidden, float((before.logits[..., usable] - after.logits[..., usable]).abs().max()))


def summary(report: dict) -> str:
    line = (f"{report['model']} grown from {report['base_vocab_size']:,} to {report['vocab_size']:,} tokens "
            f"({report['new_rows']:,} new rows, --init {report['init']})")
    if report["init"] == "regression":
        held = report["fit"]["held_out"]
        line += (f"; fitted on {report['fit']['fitted_on']:,} shared tokens, on {held['tokens']:,} held out: "
                 f"R² {held['r2']:.3f}, cosine {held['cosine']:.3f}")
    return line


def run(args: argparse.Namespace) -> dict:
    from distill.models import quiet_transformers

    quiet_transformers(False)
    output = Path(args.output)
    if output.exists() and any(name for name in output.iterdir() if name.name != cli.LOCK_FILE) and not args.overwrite:
        raise cli.UsageError(f"--output {args.output} is not empty; pass --overwrite to replace the model files in it")
    try:
        with cli.OutputLock(args.output):
            report = extend_model(args, cli.Progress(COMMAND, not args.quiet))
    except ValueError as error:
        raise cli.UsageError(str(error)) from error
    cli.emit_summary(args, summary(report), report)
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_command(COMMAND, lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())

