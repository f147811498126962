"""Request bodies for every route: read with a size bound, decoded as JSON with a depth bound.

A body is hostile until parsed: it may be larger than memory allows, not
UTF-8, or nested a thousand levels deep (which takes Python's recursive JSON
coders past the interpreter's recursion limit). Each of these is a 4xx with
a one-line reason here, before any route looks at the content.

    >>> doc = load_json(await read_body(request, 1 << 20))
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import HTTPException, Request
from pydantic import BaseModel

MAX_DEPTH = 64  # nesting levels of arrays and objects a body may have
REF = "#/components/schemas/{model}"
# Models of the bodies that routes read themselves; `add_body_schemas` puts them in the OpenAPI components.
BODY_MODELS: dict[str, type[BaseModel]] = {}


def documented_body(model: type[BaseModel], description: str = "") -> dict[str, Any]:
    """`openapi_extra` of a route that reads its raw body itself (size bound, depth-limited decode,
    a signature over the raw bytes): OpenAPI shows `model` as the request body all the same,
    though FastAPI never parses the body with it."""
    BODY_MODELS[model.__name__] = model
    body: dict[str, Any] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
    }
    if description:
        body["description"] = description
    return {"requestBody": body}


def add_body_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    """`openapi` with the schema of every `documented_body` model (and the models it refers to) in its components."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, model in BODY_MODELS.items():
        schema = model.model_json_schema(ref_template=REF)
        for sub, sub_schema in schema.pop("$defs", {}).items():
            schemas.setdefault(sub, sub_schema)
        schemas.setdefault(name, schema)
    return openapi


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body; 413 before reading when Content-Length says it is over `limit`, or once it is."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"body of {length} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():  # also bounds chunked bodies without a length
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def load_json(body: bytes, empty: Any = ...) -> Any:
    """The decoded body; 400 for invalid UTF-8, malformed JSON or nesting over MAX_DEPTH.

    `empty` is what a blank body means (default: a 400 like any other
    malformed body).
    """
    if not body.strip():
        if empty is ...:
            raise HTTPException(400, "body: empty; expected JSON")
        return empty
    try:
        doc = orjson.loads(body)  # C, with a depth limit of its own; refuses NaN and lone surrogates
    except orjson.JSONDecodeError:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HTTPException(400, f"body: invalid UTF-8 at byte {e.start}") from None
        try:
            doc = json.loads(text)  # integers beyond 64 bits, which orjson refuses
        except RecursionError:
            raise HTTPException(400, f"body: nested deeper than {MAX_DEPTH} levels") from None
        except ValueError as e:
            raise HTTPException(400, f"body: malformed JSON ({str(e)[:80]})") from None
    if depth_over(doc, MAX_DEPTH):
        raise HTTPException(400, f"body: nested deeper than {MAX_DEPTH} levels")
    return doc


def depth_over(doc: Any, limit: int) -> bool:
    """True when arrays and objects nest more than `limit` levels (iterative: no recursion to exhaust)."""
    stack = [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        elif not isinstance(v, list):
            continue
        if d > limit:
            return True
        stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return False
