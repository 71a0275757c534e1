"""Optional dependencies: import them when a feature needs them, or say which extra to install.

The core install (``pip install napari-isfl``) fuses, trains and evaluates; plots and previews need
``[plots]`` (matplotlib), the napari plugin ``[napari]``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["MissingDependencyError", "pyplot", "require"]


class MissingDependencyError(ImportError):
    """An optional dependency a feature needs is not installed; the message names the extra."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingDependencyError` saying ``purpose`` needs ``extra``.

    Examples:
        >>> require("json", "none", "reading JSON").__name__
        'json'
        >>> require("no_such_module_here", "plots", "a preview")
        Traceback (most recent call last):
        ...
        napari_isfl._optional.MissingDependencyError: a preview needs no_such_module_here, ...
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f'{purpose} needs {module}, which is not installed: pip install "napari-isfl[{extra}]"'
        ) from error


def pyplot(purpose: str = "plotting") -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (files only, no display needed)."""
    matplotlib = require("matplotlib", "plots", purpose)
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")
