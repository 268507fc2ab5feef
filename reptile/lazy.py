"""Import-on-first-use attributes of a package (PEP 562), shared by ``reptile`` and ``analysis``.

Imports nothing but :mod:`importlib`, so a package ``__init__`` using it stays torch-free.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, names: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: a public name of ``names`` (name -> the submodule
    that defines it) or any submodule ``package.<name>``, imported on first use and cached in
    ``namespace`` (the package's ``globals()``); ``AttributeError`` otherwise."""
    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(f".{names[name]}", package), name)
        elif not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value
    return __getattr__
