"""The Beam graph of pipeline.run: thin DoFns over transforms.corpus_stages, and the counts they add up.

    files -> ReadRanges (-> Spread) -> ParseCleanFilter -> GroupByPartition -> Dedup -> JoinClusters -> Write
                                        |                                       |            ^ cluster rows
                                        +-> GroupRejected -> WriteRejected      |            | by text partition
                                                                                +-> band entries -> GroupByBandPartition
        -> BucketPairs -> pairs by the partition of their node of larger rank --+
                       -> text requests by text partition --+                    |
           records (Dedup) by text partition ---------------+-> FetchTexts -------+-> VerifyPairs -> edges
        (with --no-verify: GroupByBandPartition -> BucketEdges -> edges)
        edges -> EdgeEntries -> [GroupByKey -> Contract (each piece a star around its smallest node)] x rounds
              -> GroupByKey -> Finish -> cluster rows by text partition (a star per component)
              (-> Fallback: one union-find over the remaining edges, only if some component is no star yet)
        records + cluster rows, joined by text partition (CoGroupByKey) -> Write (and its clusters/ file)

    Spread (a Reshuffle of the line batches) only when a file is read by one worker: a compressed
    one, or all files under --limit.

Connected components run as unrolled rounds (transforms.connected, a strengthened large-star /
small-star) keyed by
text partition: no step holds every edge or every removed id (docs/near-dedup.md).

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
from apache_beam import typehints
from apache_beam.metrics import Metrics

from pipeline import cli
from transforms import components, connected, corpus_stages, near_pairs, storage
from transforms.corpus_stages import MAX_PREFIX, RunSettings, SourceFile, add_counts, write_joined

METRICS_NAMESPACE = "koforge"
COUNTS = "counts"  # the tagged output of every DoFn's tally
COUNTS_FILE = "counts.json"  # in the staging dir: the sum of every stage's tally, read back by pipeline/run.py
PROGRESS_COMMAND = "pipeline.run"


def report(tally: Counter):
    """The tally as Beam counters (whole counts only; `seconds_*` are timings; `max_*` as distributions)
    and as the counts output."""
    for name, value in tally.items():
        if isinstance(value, int) and value:
            if name.startswith(MAX_PREFIX):
                Metrics.distribution(METRICS_NAMESPACE, name).update(value)
            else:
                Metrics.counter(METRICS_NAMESPACE, name).inc(value)
    return beam.pvalue.TaggedOutput(COUNTS, dict(tally))


class Stage(beam.DoFn):
    """A DoFn of this graph: its output type is Any, as Beam would mostly infer anyway, but without reading
    `process`'s bytecode for it (~40 ms of graph building per DoFn, so ~1 s for the unrolled component rounds)."""

    def infer_output_type(self, input_type):
        return typehints.Any


class ReadLines(Stage):
    """All files, in order, read by one worker under --limit (the first records, as a plain loop reads)
    -> LineBatches."""

    def __init__(self, settings: RunSettings, limit: int | None):
        self.settings, self.limit = settings, limit

    def process(self, sources: list[SourceFile]):
        yield from corpus_stages.read_files(sources, self.settings, self.limit)


def read_ranges(pipeline: beam.Pipeline, sources: list[SourceFile], settings: RunSettings):
    """The LineBatches of every input file, large uncompressed ones in byte ranges read by several workers
    (corpus_stages.plan_ranges: the lines of each range counted first, numbered per file, then read)."""
    return (
        pipeline
        | "Ranges" >> beam.Create(corpus_stages.plan_ranges(sources, settings.read_range_bytes))
        | "CountLines" >> beam.Map(lambda part: (part.source.path, (part, corpus_stages.count_range_lines(part))))
        | "RangesByFile" >> beam.GroupByKey()
        | "NumberRanges" >> beam.FlatMap(lambda element: corpus_stages.number_ranges(element[1]))
        | "SpreadRanges" >> beam.Reshuffle()
        | "ReadRanges" >> beam.FlatMap(corpus_stages.read_range, settings)
    )


class ParseCleanFilter(Stage):
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


class DedupPartition(Stage):
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


class WritePartition(Stage):
    """One partition's records, less its near duplicates -> its Parquet file (and clusters file) in the staging dir.

    With near dedup, the element is the partition's records joined with its cluster rows
    (transforms.connected): a writer holds only its own partition's removed ids.
    """

    def __init__(self, settings: RunSettings, progress: bool):
        self.settings, self.progress_enabled = settings, progress

    def setup(self):
        self.progress, self.written = cli.Progress(PROGRESS_COMMAND, self.progress_enabled), 0

    def process(self, element):
        path, tally = write_joined(*element, self.settings)
        if path is None:
            return
        yield report(tally)
        yield path
        self.written += 1
        self.progress.count(self.written, "partitions written", self.settings.num_partitions)


class SumCounts(beam.CombineFn):
    """Adds up the tallies of every stage into one dict of counts."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, accumulator, counts):
        return add_counts(accumulator, counts)

    def merge_accumulators(self, accumulators):
        merged = Counter()
        for accumulator in accumulators:
            add_counts(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return dict(accumulator)


class BucketPairs(Stage):
    """Band entries of one band partition -> candidate node pairs by the pairs' partition; text requests on the side."""

    REQUESTS = "requests"

    def process(self, element):
        pairs, tally = near_pairs.bucket_pairs(element[1])
        by_dest, requests = near_pairs.route_pairs(pairs)
        yield from by_dest.items()
        for partition, request in requests.items():
            yield beam.pvalue.TaggedOutput(self.REQUESTS, (partition, request))
        yield report(tally)


class FetchTexts(Stage):
    """A text partition's records joined with the requests for them -> the requested texts, by the pairs' partition."""

    def __init__(self, settings: RunSettings):
        self.settings = settings

    def process(self, element):
        partition, joined = element
        fetched, tally = near_pairs.fetch_texts(partition, joined["records"], joined["requests"], self.settings.keep)
        yield from fetched.items()
        yield report(tally)


class VerifyPairs(Stage):
    """One partition's candidate pairs and their fetched texts -> the edges at the threshold (true Jaccard)."""

    def __init__(self, settings: RunSettings):
        self.settings = settings

    def process(self, element):
        joined, near = element[1], self.settings.near
        edges, tally = near_pairs.verify_candidates(joined["pairs"], joined["texts"], near.ngram, near.threshold)
        if edges is not None:
            yield edges
        yield report(tally)


class ContractRound(Stage):
    """One text partition's adjacency -> one round's edges (each connected piece a star), by text partition.

    With `check` (transforms.connected.CHECKED_ROUNDS), how many of the input's nodes are not in a star yet
    goes to UNCONVERGED, one count per key. Given those counts of the round before (`left`, a side input: one
    small int per text partition) and they sum to 0, that round's input was all stars, so this one's is the
    same stars: it finishes them (Finish's rows and counts) and passes nothing on.
    """

    UNCONVERGED, ROWS = "unconverged", "rows"

    def __init__(self, first: bool, check: bool):
        self.first, self.check = first, check

    def process(self, element, left=None):
        if left is not None and not any(left):
            rows, _, tally = connected.finish(element[0], element[1])
            if rows is not None:
                yield beam.pvalue.TaggedOutput(self.ROWS, (element[0], rows))
            yield report(tally)
            return
        routed, tally = connected.contract_round(element[0], element[1], self.first, self.check)
        yield from routed.items()
        if self.check:
            yield beam.pvalue.TaggedOutput(self.UNCONVERGED, tally.pop(connected.ROUND_UNCONVERGED))
        counts = report(tally)  # Beam counters every round; the counts output the first round's only
        if self.first:
            yield counts


class Finish(Stage):
    """One text partition's adjacency after the rounds -> its cluster rows; its nodes not yet in a star on the side."""

    UNCONVERGED = "unconverged"

    def __init__(self, first: bool):
        self.first = first

    def process(self, element):
        rows, unconverged, tally = connected.finish(element[0], element[1], self.first)
        if rows is not None:
            yield element[0], rows
        yield beam.pvalue.TaggedOutput(self.UNCONVERGED, unconverged)
        yield report(tally)


def write_counts(counts: dict, staging: str) -> None:
    storage.write_json_atomic(storage.join(staging, COUNTS_FILE), counts)


def build_graph(pipeline: beam.Pipeline, sources: list[SourceFile], settings: RunSettings, limit: int | None = None,
                progress: bool = False) -> None:
    """pipeline.run's whole graph on `pipeline`; its files land in settings.staging (see the module docstring)."""
    if limit is not None:  # one reader, the files in order: the first `limit` records, as in a plain loop
        batches = pipeline | "Files" >> beam.Create([sources]) | "ReadLines" >> beam.ParDo(ReadLines(settings, limit))
    else:
        batches = read_ranges(pipeline, sources, settings)
    if limit is not None or not all(map(corpus_stages.splittable, sources)):
        # A file read by one worker (compressed, or all files under --limit): its batches spread over the workers.
        # Byte ranges are spread already, and shuffling their lines again would cost a copy of the input.
        batches = batches | "Spread" >> beam.Reshuffle()
    parsed = batches | "ParseCleanFilter" >> beam.ParDo(ParseCleanFilter(settings, progress)).with_outputs(
        ParseCleanFilter.REJECTED, COUNTS, main="records")
    deduped = (
        parsed.records
        | "GroupByPartition" >> beam.GroupByKey()
        | "Dedup" >> beam.ParDo(DedupPartition(settings)).with_outputs(DedupPartition.BANDS, COUNTS, main="records")
    )
    to_write = deduped.records
    near_counts = []
    if settings.near is not None:  # each writer gets its partition's records and cluster rows, joined
        clusters, near_counts = _near_duplicates(deduped.bands, deduped.records, settings)
        to_write = {"records": deduped.records, "clusters": clusters} | "JoinClusters" >> beam.CoGroupByKey()
    written = to_write | "Write" >> beam.ParDo(WritePartition(settings, progress)).with_outputs(
        COUNTS, main="paths")
    _ = (
        parsed.rejected
        | "GroupRejected" >> beam.GroupByKey()
        | "WriteRejected" >> beam.Map(lambda element: corpus_stages.write_rejected(*element, settings))
    )
    count_streams = [parsed.counts, deduped.counts, written.counts, *near_counts]
    _ = (
        count_streams
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombineGlobally(SumCounts())
        | "WriteCounts" >> beam.Map(write_counts, settings.staging)
    )


def _near_duplicates(bands, records, settings: RunSettings):
    """Band entries (+ the records, to fetch candidates' texts) -> cluster rows by text partition, count streams.

    Verified (default): candidate pairs from every bucket, their texts fetched from the
    records' partitions, checked by true Jaccard (transforms.near_pairs). --no-verify:
    a star per bucket (transforms.components.bucket_edges). Then the components
    (`_components`).
    """
    near = settings.near
    grouped = bands | "GroupByBandPartition" >> beam.GroupByKey()
    counts = []
    if near.verify:
        proposed = grouped | "BucketPairs" >> beam.ParDo(BucketPairs()).with_outputs(
            BucketPairs.REQUESTS, COUNTS, main="pairs")
        fetched = (
            {"records": records | "RecordsToFetch" >> beam.Map(corpus_stages.columns_to_fetch, settings),
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
    clusters, component_counts = _components(edges, settings.near.rounds)
    return clusters, counts + component_counts


def _components(edges, rounds: int):
    """Edges -> (partition, cluster rows) of every text partition with a node, and count streams.

    `rounds` rounds, each a GroupByKey of the adjacency by text partition and a
    `contract_round` (transforms.connected), then `Finish`. After each of connected.CHECKED_ROUNDS the
    counts of nodes not yet in a star reach the next round as a side input (a list, one count per text
    partition: cheaper in the runner than a CombineGlobally per checked round); when all are 0, the next
    round finishes (`ContractRound`)
    and the rounds after it run over nothing, so a graph that converges early does not carry its stars
    through every unrolled round. If some node is not in a star after the last round (too few rounds for
    this graph), the rows of Finish are dropped and one union-find over the remaining edges (`Fallback`)
    gives them instead: slower and in one worker, never wrong.
    """
    entries = edges | "EdgeEntries" >> beam.FlatMap(lambda batch: connected.edge_entries(batch).items())
    counts, early_rows, left = [], [], None
    for number in range(1, rounds + 1):
        step, first, check = f"Contract{number}", number == 1, number in connected.CHECKED_ROUNDS
        # Only the outputs a round can have (a PCollection per output costs every round some runner time): counts
        # from the first round and from one that may finish (after a checked round), as the rows.
        finishing = left is not None
        tags = [tag for tag, used in ((COUNTS, first or finishing), (ContractRound.UNCONVERGED, check),
                                      (ContractRound.ROWS, finishing)) if used]
        stepped = (entries | f"Group{step}" >> beam.GroupByKey()
                   | step >> beam.ParDo(ContractRound(first, check), *([left] if left else [])).with_outputs(
                       *tags, main="entries"))
        entries = stepped.entries
        if first or finishing:
            counts.append(stepped[COUNTS])
        if finishing:
            early_rows.append(stepped[ContractRound.ROWS])
        left = beam.pvalue.AsList(stepped[ContractRound.UNCONVERGED]) if check else None
    remaining = entries | "GroupFinish" >> beam.GroupByKey()
    finished = remaining | "Finish" >> beam.ParDo(Finish(first=rounds == 0)).with_outputs(
        Finish.UNCONVERGED, COUNTS, main="rows")
    unconverged = beam.pvalue.AsList(finished[Finish.UNCONVERGED])  # a count per text partition
    converged_rows = finished.rows | "IfConverged" >> beam.FlatMap(
        lambda element, left: [] if any(left) else [element], unconverged)
    fallback_rows = (
        remaining
        | "IfUnconverged" >> beam.FlatMap(lambda element, left: [(element[0], list(element[1]))] if any(left) else [],
                                          unconverged)
        | "CollectRemaining" >> beam.combiners.ToList()
        | "Fallback" >> beam.FlatMap(lambda remainder: connected.fallback_components(remainder).items())
    )
    rows = (converged_rows, fallback_rows, *early_rows) | "ClusterRows" >> beam.Flatten()
    return rows, counts + [finished[COUNTS]]
