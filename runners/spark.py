"""Apache Spark (3.x) through Beam's portable runner.

Two ways in, chosen by the option the user gives:

- `--job_endpoint HOST:8099` -> PortableRunner against a Spark job server you run:

      docker run --net=host apache/beam_spark3_job_server:<beam version> \\
          --spark-master-url=spark://SPARK_MASTER:7077
      # or, without Docker:
      java -jar beam-runners-spark-3-job-server-<beam version>.jar \\
          --spark-master-url=spark://SPARK_MASTER:7077 --job-port=8099

- `--spark_master_url spark://SPARK_MASTER:7077` -> SparkRunner, which starts that job
  server itself from the jar (downloaded from Maven Central on first use, or
  `--spark_job_server_jar PATH`). `--spark_submit_uber_jar --spark_rest_url
  http://SPARK_MASTER:6066` submits the job as one jar through Spark's REST API instead.

The job server's Beam version must equal the installed apache-beam's. The SDK harness
environment and staging are those of `runners.portable.cluster_environment_options`.
"""
from __future__ import annotations

from importlib.metadata import version

from runners.portable import cluster_environment_options

BEAM_VERSION = version("apache-beam")  # the job server image must match the SDK; importing apache_beam would be slow

JOB_SERVER_COMMAND = (f"docker run --net=host apache/beam_spark3_job_server:{BEAM_VERSION} "
                      "--spark-master-url=spark://SPARK_MASTER:7077")
REQUIRED = (("spark_master_url", "job_endpoint"),)


def options(given: dict[str, str | None]) -> list[str]:
    runner = "PortableRunner" if "job_endpoint" in given else "SparkRunner"
    return [f"--runner={runner}", *cluster_environment_options(given)]
