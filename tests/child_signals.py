"""What a test's child process needs from signals."""
from __future__ import annotations

import signal


def default_sigint() -> None:
    """In the child, before exec: SIGINT back to its default action.

    A shell without job control starts background commands (``./scripts/test.sh &``, ``nohup``,
    a CI step run in the background) with SIGINT ignored, and the ignoring is inherited by pytest
    and by every process it starts. Python installs its KeyboardInterrupt handler only where SIGINT
    is not ignored, so such a child (``reptile train``, ``reptile demo``) never sees the test's SIGINT
    and runs on until the test's timeout: the ``TimeoutExpired`` tests/test_faults.py and
    tests/test_demo_server.py failed with in background CI runs. The commands keep honouring an
    ignored SIGINT (that is what ``nohup`` asks for); a test sets the default for its own child.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
