"""Build shim for Beam's staging: `--setup_file ./setup.py` makes Dataflow (and the portable
runner's DOCKER/PROCESS environments) build this project's sdist and pip-install it on every
worker, so remote workers import `pipeline`, `transforms`, ... Everything (name, packages,
dependencies) comes from pyproject.toml; this file only gives Beam's stager its entry point.
"""
from setuptools import setup

setup()
