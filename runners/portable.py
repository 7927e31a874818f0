"""Beam's portable runner: the path Spark and Flink take, and its embedded form for local proof.

A portable job is a runner-API pipeline proto sent to a *job server* (HOST:8099), which
translates it for its engine; the user code runs in SDK harnesses chosen by
`--environment_type`:

- DOCKER (Beam's default): each Spark executor / Flink task manager starts the
  `apache/beam_python3.X_sdk:<beam version>` container, which pip-installs the staged
  sdist of this project (`--setup_file`, added by the presets) before it runs bundles.
  The workers need Docker, and PyPI for the dependencies, or pass
  `--sdk_container_image` with an image built FROM that one with koforge installed.
- PROCESS: like DOCKER without Docker: `--environment_config='{"command": "/opt/apache/beam/boot"}'`,
  the SDK's boot binary installed on every worker.
- EXTERNAL: `--environment_config=localhost:50000`; beside every worker runs
  `python -m apache_beam.runners.worker.worker_pool_main --service_port=50000` in a Python
  environment where koforge is installed (`pip install koforge`); staged files are not used.
- LOOPBACK: the harness runs inside the launching process; only for a job server whose
  engine runs on the same machine (the embedded job server, `local[*]` Spark, `[local]` Flink).

`--job_endpoint embed` starts Beam's own job server (the FnApiRunner behind the job API) in
the launching process: the same proto, job API, artifact staging and Fn API data plane as a
cluster, no JVM. The tests run the pipelines that way and compare the outputs byte for byte
with DirectRunner's.
"""
from __future__ import annotations

from runners.staging import ENVIRONMENTS_THAT_INSTALL_STAGED_FILES, staging_options

DEFAULT_ENVIRONMENT = "DOCKER"


def embedded_options(given: dict[str, str | None]) -> list[str]:
    return ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


def cluster_environment_options(given: dict[str, str | None]) -> list[str]:
    """SDK harness environment for a Spark or Flink cluster: DOCKER, with this project staged.

    The sdist is staged only where the environment installs staged files (DOCKER, PROCESS).
    """
    environment = (given.get("environment_type") or DEFAULT_ENVIRONMENT).upper()
    options = [] if "environment_type" in given else [f"--environment_type={DEFAULT_ENVIRONMENT}"]
    if environment in ENVIRONMENTS_THAT_INSTALL_STAGED_FILES:
        options += staging_options(given)
    return options
