"""`spark-submit` entry point of `--engine spark`: pipeline.run or pipeline.shard inside the session spark-submit sets up.

    spark-submit [--master URL] [--conf KEY=VALUE ...] runners/spark_submit.py pipeline.run --input ... --output ...
    spark-submit ... runners/spark_submit.py pipeline.shard --input ... --tokenizer ... --output ...

The master, deploy mode, memory and every other Spark setting come from spark-submit (or
the cluster's defaults: Dataproc, EMR, Databricks); the command's own options follow its
name, and `--engine spark` is implied. The command finds the session active and uses it
(pipeline/spark_session.py), ships the project's packages to the executors itself, and this
script stops the session at the end. docs/spark.md has the command lines per platform. Not
to be confused with runners/spark.py, the preset of Beam's portable SparkRunner.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

COMMANDS = ("pipeline.run", "pipeline.shard")
USAGE = f"usage: spark-submit [spark options] {__file__} {{{','.join(COMMANDS)}}} [options of the command]"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:  # run from a checkout (spark-submit puts runners/ first on the path, not its parent)
        sys.path.insert(1, root)
    from pyspark.sql import SparkSession

    session = SparkSession.builder.appName(argv[0]).getOrCreate()
    try:
        return importlib.import_module(argv[0]).main([*argv[1:], "--engine", "spark"])
    finally:
        session.stop()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
