"""The CLI reference page, generated from the `driftloop` argument parser.

Every command and option is documented once, in its argparse `help`; this module
renders `driftloop --help` and each subcommand's help into
docs/reference/cli.md, and a test keeps that page in step with the code.

    $ python -m driftloop.app.cli_doc            # print the generated part
    $ python -m driftloop.app.cli_doc --write    # replace it in the page between the markers
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from pathlib import Path

from driftloop.app.pages import main, write_between

START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"
PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "cli.md"
WIDTH = 100  # fixed, so the page does not depend on the terminal it was generated in


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each direct subcommand, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _help(parser: argparse.ArgumentParser) -> str:
    cls = parser.formatter_class
    parser.formatter_class = functools.partial(cls, width=WIDTH)
    try:
        return parser.format_help().rstrip()
    finally:
        parser.formatter_class = cls


def _sections(parser: argparse.ArgumentParser, level: int) -> list[str]:
    out = []
    for _, summary, sub in _subcommands(parser):
        out += [f"{'#' * level} `{sub.prog}`", ""]
        if summary:
            out += [summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else "."), ""]
        out += ["```text", _help(sub), "```", ""]
        out += _sections(sub, level + 1)
    return out


def reference_markdown() -> str:
    from driftloop.app.cli import make_parser

    parser = make_parser()
    lines = ["### `driftloop`", "", "```text", _help(parser), "```", ""] + _sections(parser, 3)
    return "\n".join(lines).rstrip()


def write_page(page: Path = PAGE) -> None:
    """Replace the generated part between the markers of `page` (which must hold both markers)."""
    write_between(page, START, END, reference_markdown())


if __name__ == "__main__":  # pragma: no cover
    main(reference_markdown, write_page)
