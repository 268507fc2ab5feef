"""Progress bars for the verify checks: tqdm on stderr, or nothing."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm


@contextmanager
def bar(progress: bool, total: int, desc: str) -> Iterator[tqdm]:
    """A tqdm bar on stderr (disabled when ``progress`` is False); ``bar.update(n)`` advances it."""
    b = tqdm(total=total, desc=desc, file=sys.stderr, disable=not progress, leave=False, dynamic_ncols=True)
    try:
        yield b
    finally:
        b.close()
