"""Test ordering and shared fixtures.

`make test` runs one pytest session over the whole repository: unit tests first (fast feedback),
then every notebook under nbval (they build the cached artifacts: checkpoint, index, adapters,
replies), then the strict book build (which re-executes the labs cheaply from those caches),
then the browser test against the built site.
"""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

_STAGES = ("unit", "notebook", "book", "browser")


def _stage(item) -> int:
    if item.get_closest_marker("browser"):
        return 3
    if item.get_closest_marker("book"):
        return 2
    if str(item.fspath).endswith(".ipynb"):
        return 1
    return 0


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: (_stage(item), str(item.fspath)))


@pytest.fixture(scope="session")
def cpu_profile():
    from ftrag import profiles

    return profiles.get_profile("cpu")


@pytest.fixture(scope="session")
def tiny_model(cpu_profile):
    """The cpu profile's model and tokenizer, loaded once per test session."""
    from ftrag import profiles

    return profiles.load_model(cpu_profile), profiles.load_tokenizer(cpu_profile)
