"""`python -m pipeline.tokenize`: a WordPiece vocabulary from a clean corpus, ready for transformers.

    python -m pipeline.tokenize --input demo_output/corpus --output demo_output/tokenizer
    python -m pipeline.tokenize --input 'gs://bucket/corpus/clean/*.parquet' --output tok \\
        --vocab-size 30000 --sample-fraction 0.1 --stratify-by date:month      # KcBERT
    python -m pipeline.tokenize --input corpus --output tok --vocab-size 42000 \\
        --lowercase --unused-tokens 2000                                       # LM-kor
    python -m pipeline.tokenize --extend ko-tok --add-vocab-from en-tok --output koen-tok   # KoEnBERT

The work itself is in tokenizer_training.build (training) and tokenizer_training.extend
(--extend); this module parses and reports.
"""
from __future__ import annotations

import argparse
import sys

from pipeline import cli
from tokenizer_training.sampling import MAX_SEED


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        "pipeline.tokenize",
        "Train a BERT WordPiece vocabulary on a corpus (streamed, sampled, deterministic) and write a directory that "
        "transformers.AutoTokenizer.from_pretrained loads, with a report measured on a held-out sample.")
    parser.add_argument("--input", nargs="+", action="extend", metavar="PATTERN",
                        help="clean corpus directory (DIR/clean/*.parquet), Parquet files, or text / JSON-lines / "
                             "TSV / CSV files (gz, bz2, zst, xz); local paths, globs or gs:// s3:// URIs; repeatable; "
                             "required unless --extend")
    parser.add_argument("--output", required=True, metavar="DIR", help="tokenizer directory to write (local)")
    parser.add_argument("--vocab-size", type=cli.number(int, 1), default=30000, help="vocabulary entries")
    parser.add_argument("--min-frequency", type=cli.number(int, 0), default=2,
                        help="a merge needs a pair seen at least this often")
    parser.add_argument("--limit-alphabet", type=cli.number(int, 1), default=None, metavar="N",
                        help="keep only the N most frequent characters (default: all)")
    parser.add_argument("--lowercase", action="store_true",
                        help="lowercase text (LM-kor); accents are never stripped, Hangul stays syllables")
    parser.add_argument("--unused-tokens", type=cli.number(int, 0), default=0, metavar="K",
                        help="reserve [unused0]..[unused{K-1}] right after the special tokens")
    parser.add_argument("--sample-fraction", type=cli.number(float, 0, 1, low_open=True), default=1.0,
                        help="train on this fraction of the documents (KcBERT: 0.1)")
    parser.add_argument("--stratify-by", default=None, metavar="FIELD[:day|month|year]",
                        help="sample exactly that fraction of every stratum of FIELD (e.g. date:month)")
    parser.add_argument("--seed", type=cli.number(int, 0, MAX_SEED), default=0, help="sampling seed")
    parser.add_argument("--text-field", default="text", help="column or JSON field holding the text")
    parser.add_argument("--format", choices=("auto", "text", "jsonl", "json", "tsv", "csv"), default="auto",
                        help="format of the files that are not Parquet; auto: by suffix (.jsonl/.ndjson, .json: an "
                             "array when it starts with '[', .tsv, .csv, else text), as pipeline.run")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of the files that are not Parquet: utf-8, cp949 or euc-kr")
    parser.add_argument("--quoting", choices=("auto", "rfc4180", "none"), default="auto",
                        help="TSV/CSV quotes, as pipeline.run: rfc4180, none (ordinary characters) or auto")
    parser.add_argument("--allow-nfd", action="store_true",
                        help="train on decomposed (NFD) Hangul instead of stopping before the run")
    parser.add_argument("--eval-fraction", type=cli.number(float, 0, 1, high_open=True), default=0.01,
                        help="held-out share for the report, never trained on")
    parser.add_argument("--model-max-length", type=cli.number(int, 1), default=512,
                        help="model_max_length in tokenizer_config.json")
    cli.add_limit_option(parser, "usable documents")
    parser.add_argument("--extend", metavar="BASE_TOKENIZER",
                        help="instead of training: extend this WordPiece tokenizer (directory or hub id), every "
                             "base id kept (docs/tokenize.md#extending-a-vocabulary)")
    parser.add_argument("--add-vocab-from", metavar="OTHER_TOKENIZER",
                        help="with --extend: add every token of this WordPiece vocabulary that the base lacks")
    parser.add_argument("--add-tokens", type=cli.number(int, 1), metavar="N",
                        help="with --extend and --input: add the N words of the corpus that save the most tokens")
    parser.add_argument("--fill-unused", action="store_true",
                        help="with --extend: put the first new tokens into the base's [unused] slots")
    parser.add_argument("--eval-text", action="append", default=[], metavar="NAME=FILE",
                        help="with --extend: held-out text (one document a line) to compare tokens per word and "
                             "[UNK] rate before and after; repeatable, e.g. ko=ko.txt en=en.txt")
    cli.add_output_options(parser, "tokenizer files and report")
    cli.add_reporting_options(parser)
    return parser


EXTEND_ONLY = ("add_vocab_from", "add_tokens", "fill_unused", "eval_text")
# What --extend --add-tokens reads the corpus with (the training options besides these do not apply).
CORPUS_READING = ("input", "text_field", "format", "encoding", "quoting", "eval_fraction", "limit", "seed", "allow_nfd")


def check_mode(args: argparse.Namespace, parser: cli.ArgumentParser) -> None:
    """Training (--input) or extension (--extend with --add-vocab-from), and no option of the other mode."""
    if args.extend is None:
        given = [f"--{name.replace('_', '-')}" for name in EXTEND_ONLY if getattr(args, name)]
        if given:
            raise cli.UsageError(f"{', '.join(given)} only apply with --extend BASE_TOKENIZER")
        if not args.input:
            raise cli.UsageError("give --input PATTERN (train a vocabulary) or --extend BASE_TOKENIZER "
                                 "--add-vocab-from OTHER_TOKENIZER (extend one)")
        return
    if (args.add_vocab_from is None) == (args.add_tokens is None):
        raise cli.UsageError("--extend needs --add-vocab-from OTHER_TOKENIZER (the vocabulary whose tokens to add) "
                             "or --add-tokens N with --input (the corpus whose words to add), one of them")
    if args.add_tokens is not None and not args.input:
        raise cli.UsageError("--add-tokens N needs --input PATTERN: the corpus whose words are added")
    kept = {"extend", "output", "overwrite", "quiet", "json", "help", *EXTEND_ONLY,
            *(CORPUS_READING if args.add_tokens is not None else ())}
    training = [action.option_strings[0] for action in parser._actions
                if action.dest not in kept and action.option_strings and getattr(args, action.dest) != action.default]
    if training:
        raise cli.UsageError(f"--extend does not train: {', '.join(training)} do(es) not apply; drop them")
    for item in args.eval_text:
        name, _, path = item.partition("=")
        if not name or not path:
            raise cli.UsageError(f"--eval-text {item!r}: expected NAME=FILE, e.g. en=held_out_en.txt")


def extend_options_from_args(args: argparse.Namespace):
    from tokenizer_training.extend import ExtendOptions

    return ExtendOptions(base=args.extend, output=args.output, add_vocab_from=args.add_vocab_from,
                         add_tokens=args.add_tokens, corpus=options_from_args(args) if args.add_tokens else None,
                         fill_unused=args.fill_unused, overwrite=args.overwrite,
                         eval_texts=tuple(tuple(item.split("=", 1)) for item in args.eval_text))


def extension_summary(report: dict, output: str) -> str:
    from tokenizer_training.extend import EXTENSION_FILE

    lines = [f"{output}: {report['base']['vocab_size']:,} base tokens + {len(report['added']):,} from "
             f"{report['source']['source']} = {report['vocab_size']:,} ({len(report['filled_unused']):,} in [unused] "
             f"slots, {report['left_out']['count']:,} left out)"]
    for name, values in report["evaluation"].items():
        before, after = values["before"], values["after"]
        if before["words"]:
            lines.append(f"{name}: {before['fertility']:.3f} -> {after['fertility']:.3f} tokens per word, [UNK] "
                         f"{before['unk_rate']:.4%} -> {after['unk_rate']:.4%} of tokens")
    lines.append(f"report: {output}/{EXTENSION_FILE}")
    return "\n".join(lines)


def options_from_args(args: argparse.Namespace):
    from tokenizer_training.build import TokenizeOptions

    return TokenizeOptions(
        inputs=tuple(args.input), output=args.output, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
        limit_alphabet=args.limit_alphabet, lowercase=args.lowercase, unused_tokens=args.unused_tokens,
        sample_fraction=args.sample_fraction, stratify_by=args.stratify_by, seed=args.seed,
        text_field=args.text_field, eval_fraction=args.eval_fraction, model_max_length=args.model_max_length,
        limit=args.limit, format=args.format, encoding=args.encoding, quoting=args.quoting,
        allow_nfd=args.allow_nfd, overwrite=args.overwrite)


def summary(report: dict, output: str) -> str:
    from tokenizer_training.build import REPORT_FILE

    evaluation = report["evaluation"]
    lines = [f"{output}: vocabulary of {report['vocab_size']:,} (asked {report['vocab_size_requested']:,}), "
             f"trained on {report['sampled_documents']:,} documents in {report['seconds']['training']:.1f} s"]
    if evaluation["words"]:
        lines.append(f"held out {report['eval_documents']:,} documents: [UNK] {evaluation['unk_rate']:.4%} of tokens, "
                     f"{evaluation['fertility']:.3f} tokens per word, {evaluation['whole_word_share']:.1%} of words "
                     "kept whole")
    lines.append(f"report: {output}/{REPORT_FILE}")
    return "\n".join(lines)


def tokenize(args: argparse.Namespace, parser: cli.ArgumentParser) -> dict:
    from tokenizer_training.build import build_tokenizer
    from tokenizer_training.errors import TokenizeError
    from tokenizer_training.extend import extend_tokenizer

    check_mode(args, parser)
    progress = cli.Progress("pipeline.tokenize", not args.quiet)
    try:
        with cli.OutputLock(args.output):
            if args.extend is not None:
                report = extend_tokenizer(extend_options_from_args(args), progress)
            else:
                report = build_tokenizer(options_from_args(args), progress)
    except TokenizeError as error:
        raise cli.UsageError(str(error)) from None
    human = extension_summary(report, args.output) if args.extend is not None else summary(report, args.output)
    cli.emit_summary(args, human, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return cli.run_command("pipeline.tokenize", lambda: tokenize(args, parser))


if __name__ == "__main__":
    raise SystemExit(main())
