"""``python -m reptile.fewshot report RUN [RUN ...]``: the command lives in :mod:`reptile.cli.fewshot`."""
import sys

from ..cli.fewshot import report_main

sys.exit(report_main())
