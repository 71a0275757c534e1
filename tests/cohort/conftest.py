"""Fixtures of the cohort tests: one real two-worker Dask ``LocalCluster`` shared by the tests that only
need *a* cluster (its start and the workers' torch import cost seconds)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def cluster_client() -> Iterator[object]:
    """A client of a real ``LocalCluster``: 2 single-threaded worker processes."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: never clash with another cluster
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        # the workers' torch/MONAI import (seconds) belongs to the fixture, not to the first test
        client.run(importlib.import_module, "napari_isfl.inference.engine")
        yield client
