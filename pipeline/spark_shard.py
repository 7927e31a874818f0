"""The Spark graph of pipeline.shard (`--engine spark`): the steps of pipeline/beam_shard.py on PySpark RDDs.

    units -> tokenize (tokenize_unit; the tokenizer loaded once per task)
          -> split_slots summed per split (two numbers, read by the driver: Beam's side input)
          -> assign_buckets -> group_by_key (split, bucket) -> pack_bucket + write_bucket
          -> the shards' records (one small dict per shard) -> write_index

The same functions of transforms/shard_stages.py as the Beam graph, on the same batches, so
the shards and manifest are the same bytes (tests/test_spark.py). The stages' tallies travel as
a counts dataset summed by the last action, as in pipeline/spark_run.py.
"""
from __future__ import annotations

from collections import Counter
from functools import partial

from pipeline.spark_run import group_by_key
from transforms import shard_stages as stages

MAIN, COUNTS = "main", "counts"


def tokenize(units, settings: stages.ShardSettings):
    """Read units -> MAIN (split, DocBatch) for each split present in a unit; COUNTS."""
    tokenizer, total = stages.load_tokenizer(settings.staged_tokenizer_json), Counter()
    for unit in units:
        batches, tally = stages.tokenize_read_unit(unit, settings, tokenizer)
        for item in batches.items():
            yield MAIN, item
        total.update(tally)
    yield COUNTS, total


def assign(element, totals: dict, settings: stages.ShardSettings):
    split, batch = element
    return [((split, bucket), part) for bucket, part in stages.assign_buckets(batch, totals[split], settings)]


def pack_and_write(groups, settings: stages.ShardSettings):
    """((split, bucket), DocBatches) -> MAIN the staged shard's record; COUNTS."""
    total = Counter()
    for (split, bucket), batches in groups:
        rows, record, tally = stages.pack_bucket(split, bucket, batches, settings)
        yield MAIN, stages.write_bucket(rows, record, settings)
        total.update(tally)
    yield COUNTS, total


def run(session, units: list[stages.ReadUnit], settings: stages.ShardSettings) -> dict[str, int]:
    """Run the graph to the end; the stages' counts (name -> value), as beam_shard.run returns Beam's counters."""
    from pyspark import StorageLevel

    context = session.sparkContext
    tasks = max(1, min(len(units), context.defaultParallelism))
    tokenized = context.parallelize(units, tasks).mapPartitions(partial(tokenize, settings=settings)).persist(
        StorageLevel.DISK_ONLY)
    batches = tokenized.filter(lambda item: item[0] == MAIN).map(lambda item: item[1])
    totals = batches.map(lambda element: (element[0], stages.split_slots(element[1]))).reduceByKey(
        lambda a, b: a + b).collectAsMap()  # one number per split
    buckets = group_by_key(batches.flatMap(partial(assign, totals=totals, settings=settings)),
                           tasks=context.defaultParallelism)
    packed = buckets.mapPartitions(partial(pack_and_write, settings=settings)).persist(StorageLevel.DISK_ONLY)
    stages.write_index(packed.filter(lambda item: item[0] == MAIN).map(lambda item: item[1]).collect(), settings)
    counts = (context.union([tokenized, packed]).filter(lambda item: item[0] == COUNTS).map(lambda item: item[1])
              .fold(Counter(), lambda a, b: a + b))
    tokenized.unpersist()
    packed.unpersist()
    return dict(counts)
