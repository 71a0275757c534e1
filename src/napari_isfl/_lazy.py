"""Lazy attributes for packages: ``from napari_isfl.x import Name`` imports the module that defines
``Name`` only when it is first asked for, so importing a package stays cheap (no torch, no napari)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` serving ``names`` (public name -> submodule).

    Examples:
        >>> getattr_, dir_ = lazy_attributes("json", {"JSONDecoder": "decoder"})
        >>> getattr_("JSONDecoder").__name__
        'JSONDecoder'
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
