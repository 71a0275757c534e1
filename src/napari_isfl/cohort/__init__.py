"""Fusing whole cohorts: resumable batch fusion on a Dask cluster, from one laptop to a cluster.

* :mod:`~napari_isfl.cohort.manifest`: cases from a CSV manifest or a BIDS tree (no torch, no Dask);
* :mod:`~napari_isfl.cohort.resume`: provenance records and the content-based "already done" test;
* :mod:`~napari_isfl.cohort.worker`: the Dask worker plugin (one model per worker) and the per-case task;
* :mod:`~napari_isfl.cohort.run`: :func:`fuse_cohort`, the engine of ``isfl cohort`` (docs/COHORT.md).

Names are imported from their modules on first use: ``napari_isfl.cohort`` loads neither torch nor Dask,
and :func:`fuse_cohort` asks for Dask's ``distributed`` (the ``cohort`` extra) only when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

_NAMES = {
    "CaseOutcome": "settings",
    "CohortCase": "manifest",
    "CohortResult": "run",
    "CohortSettings": "settings",
    "Manifest": "manifest",
    "bids_manifest": "manifest",
    "default_worker_count": "run",
    "fuse_cohort": "run",
    "read_manifest": "manifest",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)

if TYPE_CHECKING:  # pragma: no cover
    from .manifest import CohortCase, Manifest, bids_manifest, read_manifest  # noqa: F401
    from .run import CohortResult, default_worker_count, fuse_cohort  # noqa: F401
    from .settings import CaseOutcome, CohortSettings  # noqa: F401
