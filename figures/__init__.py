"""Paper-style figures: one script per figure, each with ``main(fast: bool, out) -> list[Path]``.

Build them all with ``python -m figures [--fast] [--out DIR] [--only NAME ...]``, or one with
``python -m figures.<name> [--fast] [--out DIR]``. See docs/figures.md for what each shows.
"""
