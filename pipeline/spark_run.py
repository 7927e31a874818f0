"""The Spark graph of pipeline.run (`--engine spark`): the stages of pipeline/beam_run.py on PySpark RDDs.

Every step calls the same engine-free function as the Beam graph (transforms.corpus_stages,
transforms.near_pairs, transforms.connected), on the same batches: LineBatches, Arrow record
batches and tables, numpy arrays. Beam's GroupByKey is a shuffle over the same keys (text
partitions, band partitions, pairs' partitions) followed by a sort by key (`group_by_key`), so each
key's values reach one call as they reach a Beam worker, and the files written are the same
bytes (tests/test_spark.py compares them).

A step with several outputs (Beam's tagged outputs) yields (tag, value) pairs into one RDD
that is persisted (on local disk) and split by tag. Every step's tally travels as a
COUNTS element and is added up by one final action (`add_counts`: sums, `max_*` by max), not
by accumulators: Spark may run a task twice (a lost executor, speculation), and a counts
dataset counts only the attempt whose output was used. The components run as Beam's do:
rounds of `connected.contract_round` with the same convergence checks, `finish`, and only if
some node is not yet in a star, `fallback_components` in one task. Nothing but counts (and
the unconverged counts the checks read) reaches the driver: no edges, ids or records
(docs/spark.md).
"""
from __future__ import annotations

import time
from collections import Counter
from functools import partial
from itertools import groupby
from operator import itemgetter

from transforms import components, connected, corpus_stages, near_pairs
from transforms.corpus_stages import RunSettings, SourceFile, add_counts, columns_to_fetch, write_joined

MAIN, SIDE, COUNTS = "main", "side", "counts"  # the tags of a step's outputs


# ---------------------------------------------------------------- steps: one Spark partition of elements in


def read_files(groups, settings: RunSettings, limit: int | None):
    for sources in groups:
        yield from corpus_stages.read_files(sources, settings, limit)


def count_lines(file_range):
    return file_range.source.path, (file_range, corpus_stages.count_range_lines(file_range))


def read_ranges(ranges, settings: RunSettings):
    for file_range in ranges:
        yield from corpus_stages.read_range(file_range, settings)


def parse(batches, settings: RunSettings):
    """LineBatches -> MAIN (text partition, records), SIDE (partition, rejected rows), COUNTS."""
    total = Counter()
    for batch in batches:
        partitions, rejected, tally = corpus_stages.parse_clean_filter(batch, settings)
        for item in partitions.items():
            yield MAIN, item
        for item in rejected.items():
            yield SIDE, item
        add_counts(total, tally)
    yield COUNTS, total


def dedup(groups, settings: RunSettings):
    """(text partition, its record batches) -> MAIN (partition, id-sorted table), SIDE (band partition, entries)."""
    total = Counter()
    for partition, batches in groups:
        table, bands, tally = corpus_stages.dedup_partition(partition, batches, settings)
        yield MAIN, (partition, table)
        for item in bands.items():
            yield SIDE, item
        add_counts(total, tally)
    yield COUNTS, total


def bucket_pairs(groups):
    """(band partition, entries) -> MAIN (pairs' partition, pairs), SIDE (text partition, text requests)."""
    total = Counter()
    for _, entries in groups:
        pairs, tally = near_pairs.bucket_pairs(entries)
        by_dest, requests = near_pairs.route_pairs(pairs)
        for item in by_dest.items():
            yield MAIN, item
        for item in requests.items():
            yield SIDE, item
        add_counts(total, tally)
    yield COUNTS, total


def fetch_texts(joined, settings: RunSettings):
    """(text partition, (its records, requests)) -> MAIN (pairs' partition, fetched texts)."""
    total = Counter()
    for partition, (records, requests) in joined:
        fetched, tally = near_pairs.fetch_texts(partition, records, requests, settings.keep)
        for item in fetched.items():
            yield MAIN, item
        add_counts(total, tally)
    yield COUNTS, total


def verify_pairs(joined, settings: RunSettings):
    """(pairs' partition, (pairs, fetched texts)) -> MAIN edges at the threshold."""
    total, near = Counter(), settings.near
    for _, (pairs, texts) in joined:
        edges, tally = near_pairs.verify_candidates(pairs, texts, near.ngram, near.threshold)
        if edges is not None:
            yield MAIN, edges
        add_counts(total, tally)
    yield COUNTS, total


def bucket_edges(groups):
    """--no-verify: (band partition, entries) -> MAIN a star per bucket."""
    for _, entries in groups:
        edges = components.bucket_edges(entries)
        if edges:
            yield MAIN, edges


def contract(groups, first: bool, check: bool):
    """(text partition, entries) -> MAIN the next round's (partition, entries); with `check`, SIDE how many of its
    input's nodes are not yet in a star; COUNTS of the first round only (as in Beam, whose later rounds report to
    its counters alone)."""
    total, unconverged = Counter(), 0
    for partition, entries in groups:
        routed, tally = connected.contract_round(partition, entries, first, check)
        for item in routed.items():
            yield MAIN, item
        unconverged += tally.pop(connected.ROUND_UNCONVERGED, 0)
        add_counts(total, tally)
    if check:
        yield SIDE, unconverged
    if first:
        yield COUNTS, total


def finish_stars(groups):
    """The round after a checked round that found only stars: (text partition, entries) -> MAIN (partition, cluster
    rows), COUNTS (`finish`'s), as Beam's ContractRound does it given `left == 0`."""
    total = Counter()
    for partition, entries in groups:
        rows, _, tally = connected.finish(partition, entries)
        if rows is not None:
            yield MAIN, (partition, rows)
        add_counts(total, tally)
    yield COUNTS, total


def finish(groups, first: bool):
    """(text partition, entries) -> MAIN (partition, cluster rows), SIDE its unconverged nodes, COUNTS."""
    total, unconverged = Counter(), 0
    for partition, entries in groups:
        rows, left, tally = connected.finish(partition, entries, first)
        if rows is not None:
            yield MAIN, (partition, rows)
        unconverged += left
        add_counts(total, tally)
    yield SIDE, unconverged
    yield COUNTS, total


def write(joined, settings: RunSettings, near: bool):
    """(text partition, records or (records, cluster rows)) -> its Parquet file(s) in the staging dir; COUNTS."""
    total = Counter()
    for partition, value in joined:
        if near:
            value = {"records": list(value[0]), "clusters": list(value[1])}
        path, tally = write_joined(partition, value, settings)
        if path is not None:
            add_counts(total, tally)
    yield COUNTS, total


def write_rejected(groups, settings: RunSettings):
    for partition, rejects in groups:
        corpus_stages.write_rejected(partition, rejects, settings)
    yield COUNTS, Counter()


# ---------------------------------------------------------------- the graph


def _persist(rdd, persisted: list):
    """Keep an RDD that several steps read, on local disk (not in the JVM heap: a 1 GB executor runs 2 GB of input),
    to unpersist at the end."""
    from pyspark import StorageLevel

    persisted.append(rdd.persist(StorageLevel.DISK_ONLY))
    return rdd


class _Outputs:
    """A step's tagged output, persisted once and split by tag."""

    def __init__(self, rdd, persisted: list):
        self.rdd = _persist(rdd, persisted)

    def __getitem__(self, tag: str):
        return self.rdd.filter(lambda item: item[0] == tag).map(lambda item: item[1])


def run_graph(session, sources: list[SourceFile], settings: RunSettings, limit: int | None = None
              ) -> tuple[dict, float]:
    """pipeline.run's graph on Spark; its files land in settings.staging. Returns the counts of every step and the
    wall seconds."""
    started = time.perf_counter()
    context = session.sparkContext
    # One task per key (every key is a partition number below num_partitions): see group_by_key on why not fewer.
    shuffle = partial(group_by_key, tasks=settings.num_partitions)
    persisted: list = []
    parsed = _Outputs(_line_batches(context, sources, settings, limit).mapPartitions(partial(parse, settings=settings)),
                      persisted)
    deduped = _Outputs(shuffle(parsed[MAIN]).mapPartitions(partial(dedup, settings=settings)), persisted)
    records, count_streams = deduped[MAIN], [parsed[COUNTS], deduped[COUNTS]]
    if settings.near is not None:
        clusters, near_counts = _near_duplicates(deduped[SIDE], records, settings, shuffle, persisted)
        count_streams += near_counts
        written = shuffle(records, clusters).mapPartitions(partial(write, settings=settings, near=True))
    else:
        written = records.mapPartitions(partial(write, settings=settings, near=False))
    rejected = shuffle(parsed[SIDE]).mapPartitions(partial(write_rejected, settings=settings))
    written_counts = [step.map(lambda item: item[1]) for step in (written, rejected)]  # their only outputs
    counts = context.union(count_streams + written_counts).treeAggregate(Counter(), add_counts, add_counts)
    for rdd in persisted:
        rdd.unpersist()
    return dict(counts), time.perf_counter() - started


def _line_batches(context, sources: list[SourceFile], settings: RunSettings, limit: int | None):
    """The LineBatches of every input file, read as Beam's graph reads them: under --limit one task reads the files
    in order; else large uncompressed files in byte ranges (corpus_stages.plan_ranges: the lines of each range
    counted, numbered per file, then read), one task per range, which parses what it reads."""
    if limit is not None:
        batches = context.parallelize([sources], 1).mapPartitions(partial(read_files, settings=settings, limit=limit))
        return batches.repartition(context.defaultParallelism)  # Beam's Spread: parse on every core
    planned = corpus_stages.plan_ranges(sources, settings.read_range_bytes)
    numbered = (context.parallelize(planned, len(planned)).map(count_lines).groupByKey()
                .flatMap(lambda element: corpus_stages.number_ranges(element[1])))
    return numbered.repartition(len(planned)).mapPartitions(partial(read_ranges, settings=settings))


def group_by_key(rdd, other=None, *, tasks: int):
    """Beam's GroupByKey (or with `other`, a two-way CoGroupByKey) over text or band partitions -> (key, [values])
    (or (key, ([values], [other's values]))), in `tasks` Spark partitions.

    Not PySpark's groupByKey / cogroup: they combine on the map side, so one key's values from a whole map task
    cross into the JVM as one element (the band entries of a large input, hundreds of MB, were more than a 1 GB
    heap holds). Here each task sorts its elements by key (PySpark's external sort, which spills) and takes its
    keys one at a time, holding one key's values, as a Beam worker does. The number of tasks changes no output,
    but the JVM's memory: PySpark's partitionBy packs up to min(10 x tasks, 1000) values bound for one task into
    one serialized chunk, which the JVM reads as one byte array. With one task per key a chunk holds one key's
    values from one map task (for the records, one partition's table); with one task per core it held several
    partitions' tables, and 2 GB of input (16 partitions, local[2]) died with OutOfMemoryError in a 1 GB heap.
    """
    if other is None:
        return rdd.repartitionAndSortWithinPartitions(tasks).mapPartitions(_values_by_key)
    tagged = rdd.mapValues(lambda value: (0, value)).union(other.mapValues(lambda value: (1, value)))
    return tagged.repartitionAndSortWithinPartitions(tasks).mapPartitions(_two_sides_by_key)


def _values_by_key(items):
    for key, group in groupby(items, key=itemgetter(0)):
        yield key, [value for _, value in group]


def _two_sides_by_key(items):
    for key, group in groupby(items, key=itemgetter(0)):
        sides: tuple[list, list] = ([], [])
        for _, (side, value) in group:
            sides[side].append(value)
        yield key, sides


def _near_duplicates(bands, records, settings: RunSettings, shuffle, persisted: list):
    """Band entries (+ the records, to fetch candidates' texts) -> (partition, cluster rows), count streams."""
    near = settings.near
    grouped = shuffle(bands)
    if not near.verify:
        edges = grouped.mapPartitions(bucket_edges).map(lambda item: item[1])
        return _components(edges, near.rounds, shuffle, persisted)
    proposed = _Outputs(grouped.mapPartitions(bucket_pairs), persisted)
    to_fetch = records.map(partial(columns_to_fetch, settings=settings))
    fetched = _Outputs(shuffle(to_fetch, proposed[SIDE]).mapPartitions(partial(fetch_texts, settings=settings)),
                       persisted)
    verified = _Outputs(shuffle(proposed[MAIN], fetched[MAIN]).mapPartitions(partial(verify_pairs, settings=settings)),
                        persisted)
    clusters, component_counts = _components(verified[MAIN], near.rounds, shuffle, persisted)
    return clusters, [proposed[COUNTS], fetched[COUNTS], verified[COUNTS], *component_counts]


def _components(edges, rounds: int, shuffle, persisted: list):
    """Edges -> (partition, cluster rows), count streams: Beam's rounds (pipeline.beam_run._components), finish and
    fallback. After each of connected.CHECKED_ROUNDS the driver reads one number, the nodes not yet in a star; when
    it is 0 the next round finishes the stars and the rounds stop (on Beam the later rounds run over nothing)."""
    entries = edges.flatMap(lambda batch: connected.edge_entries(batch).items())
    counts, left = [], None
    for number in range(1, rounds + 1):
        if left == 0:
            finished = _Outputs(shuffle(entries).mapPartitions(finish_stars), persisted)
            return finished[MAIN], counts + [finished[COUNTS]]
        check = number in connected.CHECKED_ROUNDS
        stepped = _Outputs(shuffle(entries).mapPartitions(partial(contract, first=number == 1, check=check)),
                           persisted)
        if number == 1:
            counts.append(stepped[COUNTS])
        entries = stepped[MAIN]
        left = stepped[SIDE].sum() if check else None
    remaining = _persist(shuffle(entries), persisted)
    finished = _Outputs(remaining.mapPartitions(partial(finish, first=rounds == 0)), persisted)
    counts.append(finished[COUNTS])
    if finished[SIDE].sum():  # a count, the one value the driver reads back: some component is no star yet
        return remaining.coalesce(1).mapPartitions(
            lambda groups: connected.fallback_components(groups).items()), counts
    return finished[MAIN], counts
