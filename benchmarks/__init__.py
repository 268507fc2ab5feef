"""Speed and memory benchmarks of reptile-lab, each beside a baseline in the same process.

Run all: ``python -m benchmarks`` (or ``python benchmarks/run.py``); ``--quick`` for a short pass.
Results are printed as a table and written to ``benchmarks/results/``; see ``docs/benchmarks.md``.
"""
