"""`pipeline.tokenize` end to end: check, survey the corpus, train, evaluate, publish.

1. Checks before any work: options, inputs (every file listed and opened, Parquet columns
   and row counts from the footers; the first records of every other file through
   pipeline.run's checks, transforms.preflight), the output directory.
2. Survey pass: every document is read once; the held-out evaluation documents are set
   aside in a temporary file, and the training pool's characters (and strata) are counted.
   The alphabet follows, and a vocabulary too small for it is refused here, before training.
3. Training pass: the corpus is read again and the training sample streams into the
   WordPiece trainer in batches (`train_from_iterator`); nothing but one batch is in memory.
4. The held-out sample is tokenized for the report, the files are written into a temporary
   directory beside the output, the report last, and the directory is renamed into place.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np

from pipeline.cli import Progress
from tokenizer_training import corpus, wordpiece
from tokenizer_training.errors import TokenizeError
from tokenizer_training.evaluate import evaluate
from tokenizer_training.sampling import StratifiedSelection, StratifyBy, document_uniforms
from transforms import preflight, reading, storage
from transforms.hashing import utf8_buffers

REPORT_FILE = "tokenizer_report.json"
REPORT_FORMAT = "koforge-tokenizer-report/1"
OUTPUT_FILES = (*wordpiece.TOKENIZER_FILES, REPORT_FILE)  # all this command writes; the report (written last) marks it done


@dataclass(frozen=True)
class TokenizeOptions:
    inputs: tuple[str, ...]
    output: str
    vocab_size: int = 30000
    min_frequency: int = 2
    limit_alphabet: int | None = None
    lowercase: bool = False
    unused_tokens: int = 0
    sample_fraction: float = 1.0
    stratify_by: str | None = None
    seed: int = 0
    text_field: str = "text"
    eval_fraction: float = 0.01
    model_max_length: int = 512
    limit: int | None = None  # only the first N usable documents (quick trials)
    format: str = "auto"  # files other than Parquet: text, jsonl, json, tsv or csv; auto: by suffix
    encoding: str = "utf-8"  # of files other than Parquet: utf-8, cp949 or euc-kr
    quoting: str = "auto"  # TSV/CSV quotes (transforms.reading.QUOTINGS)
    allow_nfd: bool = False  # train on decomposed (NFD) Hangul instead of stopping
    overwrite: bool = False


@dataclass
class Survey:
    """What the first pass learns about the corpus."""

    documents: int = 0  # usable documents
    eval_documents: int = 0
    pool_documents: int = 0
    characters: np.ndarray = field(default_factory=lambda: np.zeros(wordpiece.CODE_POINTS, dtype=np.int64))
    strata: Counter = field(default_factory=Counter)  # pool documents per stratum
    drops: Counter = field(default_factory=Counter)


def check_options(options: TokenizeOptions) -> None:
    try:
        reading.check_encoding(options.encoding)
    except reading.InputFormatError as error:
        raise TokenizeError(str(error)) from error
    reserved = len(wordpiece.BERT_SPECIAL_TOKENS) + options.unused_tokens
    if options.vocab_size <= reserved:
        raise TokenizeError(f"--vocab-size {options.vocab_size} leaves no room: the "
                            f"{len(wordpiece.BERT_SPECIAL_TOKENS)} special tokens and {options.unused_tokens} "
                            f"[unused] tokens alone take {reserved} entries")


def prepare_output(output: str, overwrite: bool) -> Path:
    """The output directory as an absolute local path; one that holds a tokenizer needs --overwrite.

    Other files in it are left alone: publishing replaces only the files this command writes.
    """
    if "://" in output:
        raise TokenizeError(f"--output {output!r}: must be a local directory (copy it to a bucket afterwards)")
    path = Path(output).absolute()
    if path.exists():
        if not path.is_dir():
            raise TokenizeError(f"--output {output!r} exists and is not a directory")
        ours = [name for name in OUTPUT_FILES if (path / name).exists()]
        if ours and not overwrite:
            raise TokenizeError(f"--output {output!r} already holds a tokenizer ({', '.join(ours)}); pass --overwrite "
                                "to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def survey_corpus(files: list[corpus.CorpusFile], options: TokenizeOptions, stratify: StratifyBy | None,
                  eval_file: TextIO, progress: Progress) -> Survey:
    """Pass 1: count, set the held-out documents aside (one JSON string a line), count the pool's characters."""
    survey = Survey()
    value_field = stratify.field if stratify else None
    for batch in corpus.read_batches(files, options.text_field, value_field, survey.drops, limit=options.limit,
                                     read_options=read_options(options)):
        held_out = document_uniforms(batch.texts, options.seed)[:, 0] < options.eval_fraction
        pool = np.flatnonzero(~held_out).tolist()
        for text in batch.texts.filter(held_out).to_pylist():
            eval_file.write(json.dumps(text, ensure_ascii=False) + "\n")
        pool_texts = batch.texts.filter(~held_out) if len(pool) < len(batch.texts) else batch.texts
        wordpiece.count_characters(utf8_buffers(pool_texts)[1], survey.characters)
        if stratify is not None:
            survey.strata.update(stratify.key(batch.values[index]) for index in pool)
        survey.documents += len(batch.texts)
        survey.pool_documents += len(pool)
        survey.eval_documents += len(batch.texts) - len(pool)
        progress.tick(f"survey: {survey.documents:,} documents read")
    return survey


def training_batches(files: list[corpus.CorpusFile], options: TokenizeOptions, stratify: StratifyBy | None,
                     selection: StratifiedSelection | None, sampled: Counter,
                     progress: Progress) -> Iterator[list[str]]:
    """Pass 2: the training sample, batch by batch, in corpus order; counts go into `sampled`."""
    value_field = stratify.field if stratify else None
    for batch in corpus.read_batches(files, options.text_field, value_field, Counter(), limit=options.limit,
                                     read_options=read_options(options)):
        draws = document_uniforms(batch.texts, options.seed)
        keep = draws[:, 0] >= options.eval_fraction
        if selection is not None:
            pool = np.flatnonzero(keep)
            keep[pool] = selection.keep(draws[pool, 1], [stratify.key(batch.values[index]) for index in pool.tolist()])
        elif options.sample_fraction < 1.0:
            keep &= draws[:, 1] < options.sample_fraction
        texts = (batch.texts.filter(keep) if not keep.all() else batch.texts).to_pylist()
        sampled["documents"] += len(texts)
        sampled["read"] += len(batch.texts)
        progress.tick(f"training: {sampled['read']:,} documents read, {sampled['documents']:,} sampled")
        if texts:
            yield texts
    progress.say(f"training: all {sampled['documents']:,} sampled documents counted; computing WordPiece merges")


def held_out_texts(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def strata_report(survey: Survey, selection: StratifiedSelection) -> list[dict]:
    keys = sorted(survey.strata, key=lambda key: (key is not None, key or ""))
    return [{"stratum": key, "documents": survey.strata[key], "sampled": selection.targets[key]} for key in keys]


def list_and_check_inputs(options: TokenizeOptions, stratify: StratifyBy | None) -> list[corpus.CorpusFile]:
    """Every input listed, opened and (Parquet) checked for its columns before any work."""
    files = corpus.list_inputs(list(options.inputs), options.format)
    if stratify is not None and any(file.format == "text" for file in files):
        raise TokenizeError(f"--stratify-by {stratify}: plain text files have no fields; "
                            "use Parquet, JSON lines, TSV or CSV input")
    parquet_rows = corpus.parquet_rows(files, options.text_field, stratify.field if stratify else None)
    corpus.check_readable(files)
    if sum(file.size for file in files) == 0 or (parquet_rows == 0 and all(f.format == corpus.PARQUET for f in files)):
        raise TokenizeError(f"the input is empty: {len(files)} file(s) without a single document")
    return corpus.check_text_files(files, preflight_checks(options, stratify, files))


def read_options(options: TokenizeOptions) -> corpus.ReadOptions:
    return corpus.ReadOptions(reading.check_encoding(options.encoding), options.quoting)


def preflight_checks(options: TokenizeOptions, stratify: StratifyBy | None,
                     files: list[corpus.CorpusFile]) -> preflight.Checks:
    """pipeline.run's checks (transforms.preflight) as this command's options set them: the text field, the
    --stratify-by field (when no Parquet file could hold it instead), the encoding and quoting, NFD."""
    kept = ((stratify.field, "str"),) if stratify and all(file.format != corpus.PARQUET for file in files) else ()
    return preflight.Checks(
        fields=reading.FieldSpec(options.text_field, None, kept), encoding=reading.check_encoding(options.encoding),
        quoting=options.quoting, max_record_bytes=corpus.MAX_LINE_BYTES, nfd_allowed=options.allow_nfd,
        nfd_fix="the vocabulary would learn jamo, not syllables: compose them first (pipeline.run --nfc writes NFC "
                "text), or pass --allow-nfd to train on them as they are", kept_option="--stratify-by")


def check_survey(survey: Survey, stratify: StratifyBy | None) -> None:
    if survey.documents == 0:
        dropped = ", ".join(f"{reason} {count:,}" for reason, count in sorted(survey.drops.items()))
        raise TokenizeError(f"the input holds no usable document ({dropped or 'no records'})")
    if survey.pool_documents == 0:
        raise TokenizeError(f"all {survey.documents:,} documents went to the held-out sample; lower --eval-fraction")
    if stratify is not None and set(survey.strata) == {None}:
        raise TokenizeError(f"--stratify-by {stratify}: no document has a usable {stratify.field!r} value")


def plan_training(survey: Survey, tokenizer, options: TokenizeOptions,
                  stratify: StratifyBy | None) -> tuple[wordpiece.Alphabet, StratifiedSelection | None]:
    """The alphabet and the stratified selection; a vocabulary too small for the alphabet is refused here."""
    alphabet = wordpiece.build_alphabet(survey.characters, tokenizer, options.limit_alphabet)
    base = alphabet.base_size(options.unused_tokens)
    if options.vocab_size <= base:
        raise TokenizeError(
            f"--vocab-size {options.vocab_size} is too small for this corpus: {len(wordpiece.BERT_SPECIAL_TOKENS)} "
            f"special tokens, {options.unused_tokens} [unused], {len(alphabet.characters):,} characters and "
            f"{len(alphabet.continuations):,} ##-continuations already take {base:,} entries; raise --vocab-size "
            f"above {base:,} or keep fewer characters with --limit-alphabet")
    selection = StratifiedSelection(survey.strata, options.sample_fraction) if stratify is not None else None
    if selection is not None and sum(selection.targets.values()) == 0:
        raise TokenizeError(f"--sample-fraction {options.sample_fraction} samples no document of "
                            f"{survey.pool_documents:,}; raise it")
    return alphabet, selection


def warnings_for(vocab_size: int, survey: Survey, options: TokenizeOptions) -> list[str]:
    warnings = []
    if vocab_size < options.vocab_size:
        warnings.append(f"the vocabulary has {vocab_size:,} entries, fewer than the {options.vocab_size:,} asked "
                        f"for: the sample has no more pairs seen at least {options.min_frequency} times")
    if survey.eval_documents == 0:
        warnings.append("the held-out sample is empty, so the evaluation fields are null; raise --eval-fraction")
    return warnings


def make_report(options: TokenizeOptions, files: list[corpus.CorpusFile], survey: Survey, alphabet: wordpiece.Alphabet,
                selection: StratifiedSelection | None, sampled: Counter, evaluation: dict, vocab_size: int,
                warnings: list[str], seconds: dict) -> dict:
    return {
        "format": REPORT_FORMAT,
        "vocab_size": vocab_size,
        "vocab_size_requested": options.vocab_size,
        "special_tokens": {role: index for index, role in enumerate(wordpiece.SPECIAL_TOKEN_ROLES)},
        "unused_tokens": options.unused_tokens,
        "alphabet": {"characters": len(alphabet.characters), "continuations": len(alphabet.continuations),
                     "dropped_by_limit": alphabet.dropped},
        "sampled_documents": sampled["documents"],
        "eval_documents": survey.eval_documents,
        "documents": {"usable": survey.documents, "dropped": dict(sorted(survey.drops.items())),
                      "pool": survey.pool_documents, "sampled": sampled["documents"],
                      "held_out": survey.eval_documents},
        "sampling": {"method": "stratified" if selection is not None else "bernoulli",
                     "stratify_by": options.stratify_by,
                     "strata": strata_report(survey, selection) if selection is not None else None},
        "evaluation": evaluation,
        "warnings": warnings,
        "seconds": seconds,
        "inputs": [file.name for file in files],
        "options": {name: value for name, value in asdict(options).items() if name not in ("output", "overwrite")},
    }


def publish_tokenizer(tokenizer, report: dict, options: TokenizeOptions, staging: Path, output: Path) -> None:
    """Stage the tokenizer files, move them into place, then write the report, the mark of a finished run."""
    files = staging / "tokenizer"
    files.mkdir()
    wordpiece.save(tokenizer, files, options.lowercase, options.model_max_length)
    entries = [(str(files / name), name) for name in wordpiece.TOKENIZER_FILES]
    storage.publish(str(staging), str(output), entries, marker=REPORT_FILE)
    storage.write_json_atomic(str(output / REPORT_FILE), report, sort_keys=False)


def build_tokenizer(options: TokenizeOptions, progress: Progress | None = None) -> dict:
    """Train, evaluate and write the tokenizer directory; return the report (also in tokenizer_report.json)."""
    progress = progress or Progress("pipeline.tokenize")
    started = time.perf_counter()
    check_options(options)
    stratify = StratifyBy.parse(options.stratify_by) if options.stratify_by else None
    output = prepare_output(options.output, options.overwrite)
    files = list_and_check_inputs(options, stratify)
    progress.say(f"{len(files)} input file(s), {sum(file.size for file in files) / 1e6:,.1f} MB")
    tokenizer = wordpiece.bert_tokenizer(options.lowercase)
    staging = Path(storage.staging_dir(str(output)))
    storage.delete(str(staging))  # leftovers of an interrupted run
    staging.mkdir(parents=True)
    try:
        with open(staging / "held_out.jsonl", "w", encoding="utf-8") as eval_file:
            survey = survey_corpus(files, options, stratify, eval_file, progress)
        seconds = {"survey": round(time.perf_counter() - started, 3)}
        check_survey(survey, stratify)
        alphabet, selection = plan_training(survey, tokenizer, options, stratify)
        progress.say(f"survey: {survey.documents:,} documents ({survey.eval_documents:,} held out), "
                     f"{len(alphabet.characters):,} characters; training")

        phase_started, sampled = time.perf_counter(), Counter()
        tokenizer = wordpiece.train(tokenizer, training_batches(files, options, stratify, selection, sampled, progress),
                                    alphabet, options.vocab_size, options.min_frequency, options.unused_tokens)
        seconds["training"] = round(time.perf_counter() - phase_started, 3)
        if sampled["documents"] == 0:
            raise TokenizeError(f"--sample-fraction {options.sample_fraction} samples no document of "
                                f"{survey.pool_documents:,}; raise it")

        progress.say(f"evaluating on {survey.eval_documents:,} held-out documents")
        phase_started = time.perf_counter()
        evaluation = evaluate(tokenizer, held_out_texts(staging / "held_out.jsonl"))
        seconds["evaluation"] = round(time.perf_counter() - phase_started, 3)
        vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        warnings = warnings_for(vocab_size, survey, options)
        for warning in warnings:
            progress.say(f"warning: {warning}")
        seconds["total"] = round(time.perf_counter() - started, 3)
        report = make_report(options, files, survey, alphabet, selection, sampled, evaluation, vocab_size, warnings,
                             seconds)
        publish_tokenizer(tokenizer, report, options, staging, output)
    finally:
        storage.delete(str(staging))
    progress.say(f"wrote {output}")
    return report
