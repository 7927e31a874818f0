"""Google Cloud Dataflow (Runner v2), batch.

The user gives where: `--project`, `--region` and a `--temp_location gs://BUCKET/tmp`
(staging goes beside it). The preset gives how, each default overridable by passing the
option:

- `--setup_file=<repo>/setup.py`: Beam builds this project's sdist on the launching machine
  and every worker pip-installs it with its runtime dependencies, so the workers import
  `pipeline`, `transforms`, ... Skipped when the user passes `--sdk_container_image` (an
  image FROM `apache/beam_python3.X_sdk:<beam version>` with koforge installed starts
  faster: no install per worker) or their own `--setup_file`.
- `--machine_type=n2-standard-4`: 4 vCPUs, 16 GB. Runner v2 runs one SDK process per vCPU,
  each holding at most one dedup partition (~1.5 GiB at the default 128 MiB of input per
  partition, measured: docs/scale.md); the near-dedup components run in rounds keyed by
  text partition (transforms/connected.py), so no worker holds every candidate edge.
- `--autoscaling_algorithm=THROUGHPUT_BASED` with `--max_num_workers=32`: Dataflow adds
  workers while the backlog lasts, up to 128 vCPUs; the cap bounds the bill. Raise it for
  inputs split into more files than that (one input file is read by one core).
- `--experiments=shuffle_mode=service`: the GroupByKeys (all records once, the LSH band
  entries once) go through Dataflow Shuffle instead of the workers' disks, so workers need
  no large persistent disks and scale down as soon as their stage is done. Other
  `--experiments` the user passes are added to it.
"""
from __future__ import annotations

from runners.staging import staging_options

REQUIRED = (("project",), ("region",), ("temp_location",))
MACHINE_TYPE = "n2-standard-4"
MAX_NUM_WORKERS = 32


def options(given: dict[str, str | None]) -> list[str]:
    temp_location = given.get("temp_location") or ""
    if not temp_location.startswith("gs://"):
        raise ValueError(f"--preset dataflow needs --temp_location on Cloud Storage (gs://BUCKET/tmp), "
                         f"got {temp_location!r}")
    return [
        "--runner=DataflowRunner",
        *staging_options(given),
        f"--machine_type={MACHINE_TYPE}",
        "--autoscaling_algorithm=THROUGHPUT_BASED",
        f"--max_num_workers={MAX_NUM_WORKERS}",
        "--experiments=shuffle_mode=service",
    ]
