"""A judge's rubric: the Jinja2 template rendered for one event, cut at its verdict placeholder.

A log-probability judge compares the rubric's text up to `{{ verdict }}` followed by the
`good` word with the same text followed by the `bad` word; whatever follows the
placeholder is not scored. Templates run in Jinja2's sandbox (a rubric from a config file
cannot reach Python objects), and `correction` is "" where the user gave none.

    >>> r = Rubric(spec)
    >>> r.context(Item(prompt="2+2?", response="4"))
    'Q: 2+2?\\nA: 4\\nGood answer?'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from driftloop.core.config import JudgeSpec

_CUT = "\x00verdict\x00"  # never in a rendered event: JSON text and the store refuse NUL


@dataclass(frozen=True)
class Item:
    """What a judge reads of one event."""

    prompt: str
    response: str
    correction: str | None = None

    @property
    def hash(self) -> str:
        """Content hash: the cache key of the event's verdict (with the judge's and the rubric's)."""
        text = json.dumps([self.prompt, self.response, self.correction], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Rubric:
    """A compiled rubric with its verdict words."""

    def __init__(self, spec: JudgeSpec) -> None:
        from jinja2.sandbox import SandboxedEnvironment

        self.template = SandboxedEnvironment(keep_trailing_newline=True).from_string(spec.rubric)
        self.good, self.bad = spec.good, spec.bad
        # What a cached verdict depends on: the template and both verdict words.
        self.hash = hashlib.sha256(json.dumps([spec.rubric, spec.good, spec.bad]).encode("utf-8")).hexdigest()

    def context(self, item: Item) -> str:
        """The rubric's text for `item` up to the verdict placeholder."""
        text = self.template.render(
            prompt=item.prompt, response=item.response, correction=item.correction or "", verdict=_CUT
        )
        return text.split(_CUT, 1)[0]
