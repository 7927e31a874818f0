"""The Beam graph of pipeline.shard: thin DoFns around the stages of transforms/shard_stages.py.

    Units (one per Parquet row group)
      -> Tokenize                    tokenize_unit: (split, DocBatch) per split present in the unit
      -> SplitSlots, TotalSlots      split_slots summed per split (a side input)
      -> AssignBuckets               assign_buckets: ((split, bucket), DocBatch)
      -> GroupBuckets                one shuffle, one array batch per unit, split and bucket
      -> PackAndWrite                pack_bucket + write_bucket: one staged shard, its record
      -> AllRecords, WriteIndex      write_index: the records, for the driver to publish

Every class Beam pickles lives here or in transforms/, under an importable module name, so
workers (and `python -m pipeline.shard`, whose module is `__main__`) can unpickle them. The
stages' tallies become Beam counters in the namespace `pipeline.shard`. Why one array batch
per unit and never one element per document: docs/shard.md#scale.
"""
from __future__ import annotations

import threading
from collections import Counter

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from transforms import shard_stages as stages

NAMESPACE = "pipeline.shard"
# What the stages counted in this process: with Beam's in-process runner (the default) the
# command reads it for its progress lines; workers in other processes leave it at zero.
LOCAL_TALLY: Counter = Counter()
_LOCAL_LOCK = threading.Lock()


def count(tally: Counter) -> None:
    """A stage's tally as Beam counters (and in LOCAL_TALLY)."""
    for name, value in tally.items():
        Metrics.counter(NAMESPACE, name).inc(value)
    with _LOCAL_LOCK:
        LOCAL_TALLY.update(tally)


class TokenizeUnits(beam.DoFn):
    """One read unit -> (split, DocBatch) for each split that has documents in it."""

    def __init__(self, settings: stages.ShardSettings):
        self.settings = settings

    def setup(self):
        self.tokenizer = stages.load_tokenizer(self.settings.staged_tokenizer_json)

    def process(self, unit: stages.ReadUnit):
        batches, tally = stages.tokenize_read_unit(unit, self.settings, self.tokenizer)
        count(tally)
        yield from batches.items()


def split_slots(element: tuple[str, stages.DocBatch]) -> tuple[str, int]:
    split, batch = element
    return split, stages.split_slots(batch)


def assign_buckets(element: tuple[str, stages.DocBatch], totals: dict, settings: stages.ShardSettings):
    split, batch = element
    for bucket, part in stages.assign_buckets(batch, totals[split], settings):
        yield (split, bucket), part


class PackAndWrite(beam.DoFn):
    """All documents of one (split, bucket) -> one staged shard; yields its record."""

    def __init__(self, settings: stages.ShardSettings):
        self.settings = settings

    def process(self, element):
        (split, bucket), batches = element
        rows, record, tally = stages.pack_bucket(split, bucket, batches, self.settings)
        record = stages.write_bucket(rows, record, self.settings)
        count(tally)
        yield record


def build_pipeline(pipeline: beam.Pipeline, units: list[stages.ReadUnit], settings: stages.ShardSettings) -> None:
    batches = pipeline | "Units" >> beam.Create(units) | "Tokenize" >> beam.ParDo(TokenizeUnits(settings))
    totals = batches | "SplitSlots" >> beam.Map(split_slots) | "TotalSlots" >> beam.CombinePerKey(sum)
    (
        batches
        | "AssignBuckets" >> beam.FlatMap(assign_buckets, totals=beam.pvalue.AsDict(totals), settings=settings)
        | "GroupBuckets" >> beam.GroupByKey()
        | "PackAndWrite" >> beam.ParDo(PackAndWrite(settings))
        | "AllRecords" >> beam.combiners.ToList()
        | "WriteIndex" >> beam.Map(stages.write_index, settings)
    )


def run(options, units: list[stages.ReadUnit], settings: stages.ShardSettings) -> dict[str, int]:
    """Build and run the graph to the end with these PipelineOptions; return the committed counters (name -> value)."""
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, units, settings)
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    return {m.key.metric.name: m.committed for m in counters}
