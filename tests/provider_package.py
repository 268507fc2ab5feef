"""Throwaway ``reptile verify`` provider modules for tests."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


def provider_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str, modules: dict[str, str]) -> str:
    """Write the package ``package`` under ``tmp_path`` with one module per ``modules`` entry (name ->
    source, dedented), put ``tmp_path`` on ``sys.path`` for this test, and return the package name."""
    pkg = tmp_path / package
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, src in modules.items():
        (pkg / f"{name}.py").write_text(textwrap.dedent(src))
    monkeypatch.syspath_prepend(str(tmp_path))
    return package
