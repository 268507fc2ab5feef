"""Parsing helpers shared by the ``reptile`` command and ``python -m reptile.fewshot``.

* :func:`parse_args` -- like ``parser.parse_args``, but a flag the chosen subcommand does not know
  is reported with *that subcommand's* usage (argparse reports it with the top-level one).
* :func:`flag_words` -- errors of the science name parameters (``data_dir``, or any name in
  backticks: ```ways```); the command line shows them as the flags the user types (``--data-dir``,
  ``--ways``). Science modules should name parameters that way, never flags.

Imports nothing of the toolkit (and so not torch).
"""
from __future__ import annotations

import argparse
import re
from typing import Any, Iterator, Sequence


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


def parameter_flags(parser: argparse.ArgumentParser, every: bool = False) -> dict[str, str]:
    """``{parameter: flag}`` for the options of ``parser`` and its subparsers (``data_dir`` ->
    ``--data-dir``): those whose parameter name has an underscore, or all of them with ``every``.
    Names without one (``seed``, ``dataset``) are also ordinary words, so :func:`flag_words`
    translates them only when a message marks them as names, in backticks."""
    out: dict[str, str] = {}
    for p in _all_parsers(parser):
        for action in p._actions:
            longs = [o for o in action.option_strings if o.startswith("--")]
            if longs and (every or "_" in action.dest):
                out.setdefault(action.dest, longs[0])
    return out


def flag_words(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with the parameter names of the science written as the flags of ``parser``.

    A name in backticks (the science's way of naming a parameter, e.g. ```ways``` or
    ```data_dir```) becomes its flag whatever it is; a bare name is translated only if it has an
    underscore (:func:`parameter_flags`) and stands as a whole word (not part of a path or a longer
    name: ``my_data_dir/x`` and ``--data-dir`` stay as they are). E.g. ``"pass data_dir"`` ->
    ``"pass --data-dir"``, ``"fewer than `ways` 20"`` -> ``"fewer than --ways 20"``.
    """
    every = parameter_flags(parser, every=True)
    message = re.sub(r"`([A-Za-z_][\w]*)`", lambda m: every.get(m.group(1), m.group(0)), message)
    flags = parameter_flags(parser)
    if not flags:
        return message
    pattern = re.compile(r"(?<![\w/.\\-])(" + "|".join(map(re.escape, sorted(flags, key=len, reverse=True)))
                         + r")(?![\w/\\-]|\.\w)")
    return pattern.sub(lambda m: flags[m.group(1)], message)


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The ``dest`` names of the options actually typed in ``argv`` (not those left at their default).

    Parses ``argv`` again with every default of ``parser`` (and of its sub-parsers) suppressed;
    the parser's defaults are restored afterwards. Unknown arguments are ignored.
    """
    saved: list[tuple[argparse.Action, Any]] = []
    positional: dict[str, Any] = {}
    stack = [parser]
    while stack:
        p = stack.pop()
        for a in p._actions:  # argparse has no public way to list actions
            if isinstance(a, argparse._SubParsersAction):
                stack.extend(a.choices.values())
            if not a.option_strings:  # positionals: argparse checks their default against their choices
                positional[a.dest] = a.default
                continue
            saved.append((a, a.default))
            a.default = argparse.SUPPRESS
    saved_defaults = [(p, dict(p._defaults)) for p in _all_parsers(parser)]
    try:
        for p, _ in saved_defaults:
            p._defaults.clear()
        ns, _ = parser.parse_known_args(list(argv))
    finally:
        for a, d in saved:
            a.default = d
        for p, d in saved_defaults:
            p._defaults.update(d)
    return {k for k, v in vars(ns).items() if not (k in positional and v == positional[k])}
