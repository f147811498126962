"""Generated parts of documentation pages: the text between two HTML-comment markers.

The configuration and CLI references are rendered from code (`config_doc`, `cli_doc`) into
pages under docs/reference; a test compares each page's generated part with the code.

    >>> write_between(Path("docs/reference/cli.md"), "<!-- cli:start -->", "<!-- cli:end -->", markdown)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def write_between(page: Path, start: str, end: str, body: str) -> None:
    """Replace what stands between `start` and `end` in `page` (which must hold both markers)."""
    text = page.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise SystemExit(f"{page}: the markers {start} and {end} are missing")
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    page.write_text(f"{head}{start}\n{body}\n{end}{tail}", encoding="utf-8")


def main(render: Callable[[], str], write: Callable[[], None]) -> None:
    """`python -m ...` of a generator: print the generated part, or write it into its page (--write)."""
    if "--write" in sys.argv:
        write()
    else:
        print(render())
