"""The configuration reference page, generated from the pydantic model tree.

Each config field is documented once, in its `Field(description=...)`; this
module renders those into a markdown table in docs/reference/configuration.md,
and a test keeps that page in step with the code.

    $ python -m driftloop.app.config_doc            # print the table
    $ python -m driftloop.app.config_doc --write    # replace it in the page between the markers
"""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from driftloop.app.pages import main, write_between
from driftloop.core.config import Config

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "configuration.md"


def _type_name(annotation) -> str:
    text = (
        str(annotation)
        .replace("typing.", "")
        .replace("driftloop.core.config.", "")
        .replace("driftloop.core.config_eval.", "")
    )
    text = text.replace("<class '", "").replace("'>", "").replace("NoneType", "None")
    return text.replace("|", "\\|")


def _escape_html(text: str) -> str:
    """`<` and `>` outside code spans as entities, so `<state_dir>` is shown, not taken for a tag."""
    parts = text.split("`")
    parts[::2] = [p.replace("<", "&lt;").replace(">", "&gt;") for p in parts[::2]]
    return "`".join(parts)


def _models(annotation) -> list[type[BaseModel]]:
    """Config sections reachable through this annotation (unions, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out.extend(_models(arg))
    return out


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        d = field.default
        if isinstance(d, BaseModel):
            return ""
        return f"`{d!r}`" if d not in (None, "") else ("`null`" if d is None else "`''`")
    if field.default_factory is not None:
        try:
            d = field.default_factory()
        except TypeError:
            return ""
        if isinstance(d, BaseModel) or (isinstance(d, dict) and any(isinstance(v, BaseModel) for v in d.values())):
            return "(see below)"
        return f"`{d!r}`"
    return "required"


def rows(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, type, default, description) for every documented field, depth first."""
    out = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        path = f"{prefix}{name}"
        subs = _models(field.annotation)
        origin = typing.get_origin(field.annotation)
        if subs and origin is None:
            out += rows(subs[0], f"{path}.")
            continue
        desc = _escape_html(field.description or "").replace("|", "\\|").replace("\n", " ")
        out.append((path, _type_name(field.annotation) if not subs else "list/map of sections", _default(field), desc))
        for sub in subs:
            # A list: `key[].field`; a mapping: `key.<name>.field`; a union of sections (one of several kinds): `key.field`.
            key = f"{path}[]." if origin is list else f"{path}.<name>." if origin is dict else f"{path}."
            tag = f" ({sub.__name__})" if len(subs) > 1 else ""
            out += [(p, t, d, (x + tag).strip()) for p, t, d, x in rows(sub, key)]
    return out


def reference_markdown() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    seen = set()
    for path, typ, default, desc in rows():
        if (path, desc) in seen:
            continue
        seen.add((path, desc))
        lines.append(f"| `{path}` | {typ} | {default} | {desc} |")
    return "\n".join(lines)


def write_page(page: Path = PAGE) -> None:
    """Replace the table between the markers of `page` (which must hold both markers)."""
    write_between(page, START, END, reference_markdown())


if __name__ == "__main__":  # pragma: no cover
    main(reference_markdown, write_page)
