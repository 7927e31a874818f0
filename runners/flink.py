"""Apache Flink through Beam's portable runner.

Two ways in, chosen by the option the user gives:

- `--job_endpoint HOST:8099` -> PortableRunner against a Flink job server you run, of the
  cluster's Flink version (images exist for 1.19, 1.20, 2.0, 2.1 and 2.2):

      docker run --net=host apache/beam_flink1.20_job_server:<beam version> \\
          --flink-master=FLINK_MASTER:8081

- `--flink_master FLINK_MASTER:8081` -> FlinkRunner, which starts that job server itself
  from the jar (`--flink_version 1.20`; downloaded from Maven Central on first use, or
  `--flink_job_server_jar PATH`). `--flink_submit_uber_jar` uploads the job as one jar
  through Flink's REST API instead, with no job server process.

`--parallelism N` sets Flink's parallelism (default: the cluster's). The job server's Beam
version must equal the installed apache-beam's. The SDK harness environment and staging
are those of `runners.portable.cluster_environment_options`.
"""
from __future__ import annotations

from importlib.metadata import version

from runners.portable import cluster_environment_options

BEAM_VERSION = version("apache-beam")  # the job server image must match the SDK; importing apache_beam would be slow

JOB_SERVER_COMMAND = (f"docker run --net=host apache/beam_flink1.20_job_server:{BEAM_VERSION} "
                      "--flink-master=FLINK_MASTER:8081")
REQUIRED = (("flink_master", "job_endpoint"),)


def options(given: dict[str, str | None]) -> list[str]:
    runner = "PortableRunner" if "job_endpoint" in given else "FlinkRunner"
    return [f"--runner={runner}", *cluster_environment_options(given)]
