"""The SparkSession of `--engine spark` (pipeline/spark_run.py, pipeline/spark_shard.py), and how executors get our code.

- A session already active in this process (the command was launched through
  `spark-submit runners/spark_submit.py ...`, or from a notebook) is used as it is and
  left running; otherwise one is built from `--spark-master` (default `local[*]`) and the
  `--spark-conf` settings, and stopped at the end.
- The project's own packages travel to the executors as one zip (`addPyFile`), built from
  the files this driver imports, so executors run exactly the driver's code whatever is
  installed on them. Third-party packages (numpy, pyarrow, tokenizers, ...) must be on the
  executors already: a packed virtualenv through `spark.archives`, or a cluster image
  (docs/spark.md).
- Unless told otherwise (PYSPARK_PYTHON, or `--spark-conf spark.pyspark.python=...`),
  executors run this driver's Python interpreter: right for local[*] and for a standalone
  cluster on machines set up alike; a cluster whose Python lives elsewhere says where.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from pipeline import cli

DEFAULT_MASTER = "local[*]"
SHIPPED_PACKAGES = ("pipeline", "transforms", "runners", "tokenizer_training")  # what executors import of ours
JAVA_HINT = ("Spark needs a Java 17+ runtime: install one (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) "
             "or set JAVA_HOME")


def pyspark_session_class():
    """pyspark.sql.SparkSession, or a UsageError that names the extra to install."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise cli.UsageError("--engine spark needs PySpark: pip install 'koforge[spark]'") from None
    return SparkSession


@contextlib.contextmanager
def spark_session(master: str | None, conf: list[tuple[str, str]], app_name: str, progress: bool) -> Iterator:
    """The SparkSession to run on (see the module docstring), with our packages shipped; stopped after if ours."""
    session_class = pyspark_session_class()
    active = session_class.getActiveSession()
    if active is not None:
        if master or conf:
            raise cli.UsageError("a SparkSession is already active (spark-submit): give the master and settings to "
                                 "spark-submit, not --spark-master/--spark-conf")
        ship_packages(active.sparkContext)
        yield active
        return
    settings = dict(conf)
    # PySpark's driver reads the executors' Python from PYSPARK_PYTHON only (spark.pyspark.python is spark-submit's).
    os.environ.setdefault("PYSPARK_PYTHON", settings.get("spark.pyspark.python", sys.executable))
    settings.setdefault("spark.ui.showConsoleProgress", "true" if progress else "false")
    builder = session_class.builder.master(master or DEFAULT_MASTER).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as error:  # noqa: BLE001 - PySpark's start-up failures (no Java, bad master) become usage errors
        message = str(error)
        hint = JAVA_HINT if "JAVA" in message.upper() else "check --spark-master and --spark-conf"
        raise cli.UsageError(f"cannot start Spark ({master or DEFAULT_MASTER}): {message.splitlines()[0]}; "
                             f"{hint}") from None
    shipped = None
    try:
        session.sparkContext.setLogLevel("WARN" if progress else "ERROR")
        shipped = ship_packages(session.sparkContext)
        yield session
    finally:
        session.stop()
        if shipped is not None:
            shutil.rmtree(shipped, ignore_errors=True)


def describe(session) -> str:
    """The engine as stats.json and the summaries record it, e.g. "Spark 4.3.0 on spark://127.0.0.1:7077"."""
    return f"Spark {session.version} on {session.sparkContext.master}"


def ship_packages(context) -> str | None:
    """Zip the project's packages (as this driver imports them) and add the zip to every executor's sys.path;
    returns the zip's temporary directory (None if this context has it already), to delete after the session."""
    if getattr(context, "_koforge_shipped", False):
        return None
    root = Path(cli.__file__).resolve().parent.parent
    directory = tempfile.mkdtemp(prefix="koforge-spark-")
    archive = os.path.join(directory, "koforge_packages.zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for package in SHIPPED_PACKAGES:
            for path in sorted((root / package).rglob("*.py")):
                bundle.write(path, path.relative_to(root).as_posix())
    context.addPyFile(archive)
    context._koforge_shipped = True
    return directory
