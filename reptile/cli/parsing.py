"""Parsing helpers shared by the ``reptile`` command and ``python -m reptile.fewshot``.

* :func:`parse_args` -- like ``parser.parse_args``, but a flag the chosen subcommand does not know
  is reported with *that subcommand's* usage (argparse reports it with the top-level one).
* :func:`flag_words` -- errors of the science name parameters (``data_dir``); the command line
  shows them as the flags the user types (``--data-dir``).

Imports nothing of the toolkit (and so not torch).
"""
from __future__ import annotations

import argparse
import re
from typing import Iterator, Sequence


def _subparser_actions(parser: argparse.ArgumentParser) -> Iterator[argparse._SubParsersAction]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action


def chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The deepest subparser ``args`` went through (``reptile glyphs build`` -> the ``build`` parser)."""
    while True:
        for action in _subparser_actions(parser):
            name = getattr(args, action.dest, None) if action.dest != argparse.SUPPRESS else None
            if name in action.choices:
                parser = action.choices[name]
                break
        else:
            return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with unrecognized arguments reported by the subcommand that was
    chosen (its usage line, exit code 2), e.g. ``reptile eval: error: unrecognized arguments: --x``."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in _subparser_actions(parser):
        for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
            yield from _all_parsers(sub)


def parameter_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{parameter: flag}`` for the options of ``parser`` and its subparsers whose parameter name
    has an underscore (``data_dir`` -> ``--data-dir``). Names without one (``seed``, ``dataset``)
    are also ordinary words, so a message's use of them is left alone."""
    out: dict[str, str] = {}
    for p in _all_parsers(parser):
        for action in p._actions:
            longs = [o for o in action.option_strings if o.startswith("--")]
            if "_" in action.dest and longs:
                out.setdefault(action.dest, longs[0])
    return out


def flag_words(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with every parameter name of :func:`parameter_flags` written as its flag.

    Only whole words are replaced (not parts of paths or longer names: ``my_data_dir/x`` and
    ``--data-dir`` stay as they are), e.g. ``"pass data_dir"`` -> ``"pass --data-dir"``.
    """
    flags = parameter_flags(parser)
    if not flags:
        return message
    pattern = re.compile(r"(?<![\w/.\\-])(" + "|".join(map(re.escape, sorted(flags, key=len, reverse=True)))
                         + r")(?![\w/\\-]|\.\w)")
    return pattern.sub(lambda m: flags[m.group(1)], message)
