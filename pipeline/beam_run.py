"""The Beam graph of pipeline.run: thin DoFns over transforms.corpus_stages, and the counts they add up.

    files -> ReadLines -> Spread -> ParseCleanFilter -> GroupByPartition -> Dedup -> Write
                                     |                                       |        ^ removed ids
                                     +-> GroupRejected -> WriteRejected      |        | (side input)
                                                                             +-> band entries -> GroupByBandPartition
        -> BucketPairs -> pairs by the partition of their first record   --+
                       -> text requests by text partition --+              |
           records (Dedup) by text partition ---------------+-> FetchTexts -+-> VerifyPairs -> edges
        (with --no-verify: GroupByBandPartition -> BucketEdges -> edges)
        edges -> CollectEdges -> Components -> RemovedIds (and WriteClusters with --write-clusters)

Elements are batches (LineBatch, Arrow record batches, numpy arrays), never single
comments: Beam's Python SDK costs microseconds per element and a comment is ~35
characters (BENCHMARKS.md). Each DoFn calls one stage function and reports its tally twice:
as Beam counters (namespace `koforge`, visible in the runner's UI) and as a dict that
`SumCounts` adds up into DIR/_temporary/counts.json, which pipeline/run.py turns into
stats.json. Graph code sees only the frozen RunSettings. docs/architecture.md describes the
layout, docs/run.md the command.
"""
from __future__ import annotations

from collections import Counter

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import cli
from transforms import components, corpus_stages, near_pairs, storage
from transforms.corpus_stages import RunSettings, SourceFile

METRICS_NAMESPACE = "koforge"
COUNTS = "counts"  # the tagged output of every DoFn's tally
COUNTS_FILE = "counts.json"  # in the staging dir: the sum of every stage's tally, read back by pipeline/run.py
CLUSTER_SIZE_COUNT = "near_dedup_cluster_size_"  # + size: clusters of that size, a count in counts.json
PROGRESS_COMMAND = "pipeline.run"


def report(tally: Counter):
    """The tally as Beam counters (whole counts only; `seconds_*` are timings) and as the counts output."""
    for name, value in tally.items():
        if isinstance(value, int) and value:
            Metrics.counter(METRICS_NAMESPACE, name).inc(value)
    return beam.pvalue.TaggedOutput(COUNTS, dict(tally))


class ReadLines(beam.DoFn):
    """A group of files (one file; all files, in order, under --limit) -> LineBatches."""

    def __init__(self, settings: RunSettings, limit: int | None):
        self.settings, self.limit = settings, limit

    def process(self, sources: list[SourceFile]):
        yield from corpus_stages.read_files(sources, self.settings, self.limit)


class ParseCleanFilter(beam.DoFn):
    """A LineBatch -> (text partition, records); rejects and the tally on the side; progress on stderr."""

    REJECTED = "rejected"

    def __init__(self, settings: RunSettings, progress: bool):
        self.settings, self.progress_enabled = settings, progress

    def setup(self):
        self.progress, self.lines = cli.Progress(PROGRESS_COMMAND, self.progress_enabled), 0

    def process(self, batch):
        partitions, rejected, tally = corpus_stages.parse_clean_filter(batch, self.settings)
        yield from partitions.items()
        for partition, rejects in rejected.items():
            yield beam.pvalue.TaggedOutput(self.REJECTED, (partition, rejects))
        yield report(tally)
        self.lines += len(batch.lines)
        self.progress.count(self.lines, "lines read and cleaned")


class DedupPartition(beam.DoFn):
    """All records of one text partition -> exact-deduplicated, id-sorted records (+ LSH band entries)."""

    BANDS = "bands"

    def __init__(self, settings: RunSettings):
        self.settings = settings

    def process(self, element):
        partition, batches = element
        table, bands, tally = corpus_stages.dedup_partition(partition, batches, self.settings)
        yield partition, table
        for band_partition, entries in bands.items():
            yield beam.pvalue.TaggedOutput(self.BANDS, (band_partition, entries))
        yield report(tally)


class WritePartition(beam.DoFn):
    """One partition's records, less the near duplicates (side input) -> its Parquet file in the staging dir."""

    def __init__(self, settings: RunSettings, progress: bool):
        self.settings, self.progress_enabled = settings, progress

    def setup(self):
        self.progress, self.written = cli.Progress(PROGRESS_COMMAND, self.progress_enabled), 0

    def process(self, element, removed_ids=None):
        partition, table = element
        removed = (removed_ids or {}).get(partition)
        path, tally = corpus_stages.write_partition(partition, table, removed, self.settings)
        yield report(tally)
        yield path
        self.written += 1
        self.progress.count(self.written, "partitions written", self.settings.num_partitions)


class SumCounts(beam.CombineFn):
    """Adds up the tallies of every stage into one dict of counts."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, accumulator, counts):
        accumulator.update(counts)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator):
        return dict(accumulator)


class BucketPairs(beam.DoFn):
    """Band entries of one band partition -> candidate node pairs by the pairs' partition; text requests on the side."""

    REQUESTS = "requests"

    def process(self, element):
        pairs, tally = near_pairs.bucket_pairs(element[1])
        by_dest, requests = near_pairs.route_pairs(pairs)
        yield from by_dest.items()
        for partition, request in requests.items():
            yield beam.pvalue.TaggedOutput(self.REQUESTS, (partition, request))
        yield report(tally)


class FetchTexts(beam.DoFn):
    """A text partition's records joined with the requests for them -> the requested texts, by the pairs' partition."""

    def __init__(self, settings: RunSettings):
        self.settings = settings

    def process(self, element):
        partition, joined = element
        fetched, tally = near_pairs.fetch_texts(partition, joined["records"], joined["requests"], self.settings.keep)
        yield from fetched.items()
        yield report(tally)


class VerifyPairs(beam.DoFn):
    """One partition's candidate pairs and their fetched texts -> the edges at the threshold (true Jaccard)."""

    def __init__(self, settings: RunSettings):
        self.settings = settings

    def process(self, element):
        joined, near = element[1], self.settings.near
        edges, tally = near_pairs.verify_candidates(joined["pairs"], joined["texts"], near.ngram, near.threshold)
        if edges is not None:
            yield edges
        yield report(tally)


def near_dedup_counts(found: dict) -> dict:
    """The components' counts for stats.json: distinct edges linked and clusters of each size."""
    return {"near_dedup_edges": found["edges"],
            **{f"{CLUSTER_SIZE_COUNT}{size}": n for size, n in found["histogram"].items()}}


def write_counts(counts: dict, staging: str) -> None:
    storage.write_json_atomic(storage.join(staging, COUNTS_FILE), counts)


def build_graph(pipeline: beam.Pipeline, sources: list[SourceFile], settings: RunSettings, limit: int | None = None,
                progress: bool = False) -> None:
    """pipeline.run's whole graph on `pipeline`; its files land in settings.staging (see the module docstring)."""
    file_groups = [sources] if limit is not None else [[source] for source in sources]
    parsed = (
        pipeline
        | "Files" >> beam.Create(file_groups)
        | "ReadLines" >> beam.ParDo(ReadLines(settings, limit))
        | "Spread" >> beam.Reshuffle()
        | "ParseCleanFilter" >> beam.ParDo(ParseCleanFilter(settings, progress)).with_outputs(
            ParseCleanFilter.REJECTED, COUNTS, main="records")
    )
    deduped = (
        parsed.records
        | "GroupByPartition" >> beam.GroupByKey()
        | "Dedup" >> beam.ParDo(DedupPartition(settings)).with_outputs(DedupPartition.BANDS, COUNTS, main="records")
    )
    found, near_counts = _near_duplicates(deduped.bands, deduped.records, settings) if (
        settings.near is not None) else (None, [])
    # Only the removed ids (compact arrays) go to the writers, as a side input.
    side = [beam.pvalue.AsSingleton(found | "RemovedIds" >> beam.Map(lambda f: f["removed"]))] if (
        found is not None) else []
    written = deduped.records | "Write" >> beam.ParDo(WritePartition(settings, progress), *side).with_outputs(
        COUNTS, main="paths")
    _ = (
        parsed.rejected
        | "GroupRejected" >> beam.GroupByKey()
        | "WriteRejected" >> beam.Map(lambda element: corpus_stages.write_rejected(*element, settings))
    )
    count_streams = [parsed.counts, deduped.counts, written.counts, *near_counts]
    if found is not None:
        count_streams.append(found | "NearDedupCounts" >> beam.Map(near_dedup_counts))
    _ = (
        count_streams
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombineGlobally(SumCounts())
        | "WriteCounts" >> beam.Map(write_counts, settings.staging)
    )


def _columns_to_fetch(element, settings: RunSettings):
    """(partition, records) with only what verification fetches: id, text and a --keep rule's field."""
    partition, table = element
    return partition, table.select(["id", "text"] + ([settings.keep.field] if settings.keep.field else []))


def _near_duplicates(bands, records, settings: RunSettings):
    """Band entries (+ the records, to fetch candidates' texts) -> the components (one element), and count streams.

    Verified (default): candidate pairs from every bucket, their texts fetched from the
    records' partitions, checked by true Jaccard (transforms.near_pairs). --no-verify:
    a star per bucket (transforms.components.bucket_edges). Clusters written if asked.
    """
    near = settings.near
    grouped = bands | "GroupByBandPartition" >> beam.GroupByKey()
    counts = []
    if near.verify:
        proposed = grouped | "BucketPairs" >> beam.ParDo(BucketPairs()).with_outputs(
            BucketPairs.REQUESTS, COUNTS, main="pairs")
        fetched = (
            {"records": records | "RecordsToFetch" >> beam.Map(_columns_to_fetch, settings),
             "requests": proposed[BucketPairs.REQUESTS]}
            | "JoinRequests" >> beam.CoGroupByKey()
            | "FetchTexts" >> beam.ParDo(FetchTexts(settings)).with_outputs(COUNTS, main="texts")
        )
        verified = (
            {"pairs": proposed.pairs, "texts": fetched.texts}
            | "JoinTexts" >> beam.CoGroupByKey()
            | "VerifyPairs" >> beam.ParDo(VerifyPairs(settings)).with_outputs(COUNTS, main="edges")
        )
        edges = verified.edges
        counts = [proposed[COUNTS], fetched[COUNTS], verified[COUNTS]]
    else:
        edges = grouped | "BucketEdges" >> beam.FlatMap(lambda element: filter(None, [
            components.bucket_edges(element[1])]))
    found = (
        edges
        | "CollectEdges" >> beam.combiners.ToList()
        | "Components" >> beam.Map(components.near_duplicate_components)
    )
    if settings.write_clusters:
        _ = found | "WriteClusters" >> beam.FlatMap(
            lambda f: filter(None, [corpus_stages.write_clusters(f["clusters"], settings)]))
    return found, counts
