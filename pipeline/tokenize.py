"""`python -m pipeline.tokenize`: a WordPiece vocabulary from a clean corpus, ready for transformers.

    python -m pipeline.tokenize --input demo_output/corpus --output demo_output/tokenizer
    python -m pipeline.tokenize --input 'gs://bucket/corpus/clean/*.parquet' --output tok \\
        --vocab-size 30000 --sample-fraction 0.1 --stratify-by date:month      # KcBERT
    python -m pipeline.tokenize --input corpus --output tok --vocab-size 42000 \\
        --lowercase --unused-tokens 2000                                       # LM-kor

The work itself is in tokenizer_training.build; this module parses and reports.
"""
from __future__ import annotations

import argparse
import sys

from tokenizer_training.build import REPORT_FILE, Progress, TokenizeOptions, build_tokenizer
from tokenizer_training.errors import TokenizeError
from tokenizer_training.sampling import MAX_SEED


def _bounded_int(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range (at least {low}"
                                             + (f", at most {high})" if high is not None else ")"))
        return value
    return parse


def _fraction(low_open: bool, high_open: bool):
    interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (0 < value if low_open else 0 <= value) or not (value < 1 if high_open else value <= 1):
            raise argparse.ArgumentTypeError(f"{value} is not in {interval}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.tokenize",
        description="Train a BERT WordPiece vocabulary on a corpus (streamed, sampled, deterministic) and write a "
                    "directory that transformers.AutoTokenizer.from_pretrained loads, with a report measured on a "
                    "held-out sample.")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATTERN",
                        help="clean corpus directory (DIR/clean/*.parquet), Parquet files, or text / JSON-lines / "
                             "TSV / CSV files (gz, bz2, zst, xz); local paths, globs or gs:// s3:// URIs")
    parser.add_argument("--output", required=True, metavar="DIR", help="tokenizer directory to write (local)")
    parser.add_argument("--vocab-size", type=_bounded_int(1), default=30000, help="vocabulary entries (default 30000)")
    parser.add_argument("--min-frequency", type=_bounded_int(0), default=2,
                        help="a merge needs a pair seen at least this often (default 2)")
    parser.add_argument("--limit-alphabet", type=_bounded_int(1), default=None, metavar="N",
                        help="keep only the N most frequent characters (default: all)")
    parser.add_argument("--lowercase", action="store_true",
                        help="lowercase text (LM-kor); accents are never stripped, Hangul stays syllables")
    parser.add_argument("--unused-tokens", type=_bounded_int(0), default=0, metavar="K",
                        help="reserve [unused0]..[unused{K-1}] right after the special tokens (default 0)")
    parser.add_argument("--sample-fraction", type=_fraction(low_open=True, high_open=False), default=1.0,
                        help="train on this fraction of the documents (KcBERT: 0.1; default 1.0)")
    parser.add_argument("--stratify-by", default=None, metavar="FIELD[:day|month|year]",
                        help="sample exactly that fraction of every stratum of FIELD (e.g. date:month)")
    parser.add_argument("--seed", type=_bounded_int(0, MAX_SEED), default=0, help="sampling seed (default 0)")
    parser.add_argument("--text-field", default="text", help="column or JSON field holding the text (default text)")
    parser.add_argument("--eval-fraction", type=_fraction(low_open=False, high_open=True), default=0.01,
                        help="held-out share for the report, never trained on (default 0.01)")
    parser.add_argument("--model-max-length", type=_bounded_int(1), default=512,
                        help="model_max_length in tokenizer_config.json (default 512)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def options_from_args(args: argparse.Namespace) -> TokenizeOptions:
    return TokenizeOptions(
        inputs=tuple(args.input), output=args.output, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
        limit_alphabet=args.limit_alphabet, lowercase=args.lowercase, unused_tokens=args.unused_tokens,
        sample_fraction=args.sample_fraction, stratify_by=args.stratify_by, seed=args.seed,
        text_field=args.text_field, eval_fraction=args.eval_fraction, model_max_length=args.model_max_length,
        overwrite=args.overwrite)


def summary(report: dict, output: str) -> str:
    evaluation = report["evaluation"]
    lines = [f"{output}: vocabulary of {report['vocab_size']:,} (asked {report['vocab_size_requested']:,}), "
             f"trained on {report['sampled_documents']:,} documents in {report['seconds']['training']:.1f} s"]
    if evaluation["words"]:
        lines.append(f"held out {report['eval_documents']:,} documents: [UNK] {evaluation['unk_rate']:.4%} of tokens, "
                     f"{evaluation['fertility']:.3f} tokens per word, {evaluation['whole_word_share']:.1%} of words "
                     "kept whole")
    lines.append(f"report: {output}/{REPORT_FILE}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        report = build_tokenizer(options_from_args(args), Progress(None if args.quiet else sys.stderr))
    except TokenizeError as error:
        parser.error(str(error))
    print(summary(report, args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
