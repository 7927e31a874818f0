"""How remote workers get this project's code: Beam's `--setup_file` staging.

With `--setup_file`, Beam's stager builds an sdist of the project on the launching machine
(`python -m build --sdist`, or `python setup.py sdist` when `build` is absent), uploads it
with the job, and the worker's SDK container pip-installs it (with the runtime dependencies
of pyproject.toml) before running any bundle. Dataflow does this for every job; Beam's
portable runner does it for the DOCKER and PROCESS environments. LOOPBACK and EXTERNAL
workers use the Python environment they already run in.
"""
from __future__ import annotations

from pathlib import Path

SETUP_FILE = Path(__file__).resolve().parent.parent / "setup.py"
ENVIRONMENTS_THAT_INSTALL_STAGED_FILES = ("DOCKER", "PROCESS")


def project_setup_file() -> str:
    """The repository's setup.py, which Beam builds into the sdist it stages on workers."""
    if not SETUP_FILE.is_file():
        raise ValueError(
            f"{SETUP_FILE} not found: this preset stages the project from a source checkout. Run from a "
            "clone of the repository, or pass --setup_file PATH, or --sdk_container_image IMAGE with an image "
            "that has koforge installed")
    return str(SETUP_FILE)


def staging_options(given: dict[str, str | None]) -> list[str]:
    """`--setup_file` unless the user staged the code another way (own setup file or container image)."""
    if "setup_file" in given or "sdk_container_image" in given:
        return []
    return [f"--setup_file={project_setup_file()}"]
