"""OpenTelemetry spans of LLM calls as feedback rows: OTLP/HTTP decoding and the span mapping (pure).

Two conventions are read:

* GenAI semantic conventions (`gen_ai.*`): the current ones (messages in the
  `gen_ai.input.messages` / `gen_ai.output.messages` attributes, on the span
  or on a `gen_ai.client.inference.operation.details` event, or as
  `gen_ai.user.message` / `gen_ai.choice` / `gen_ai.content.*` span events)
  and the previous ones (`gen_ai.prompt.N.content`, `gen_ai.completion.N.content`);
  only the operations the config names (chat and completions by default).
* OpenInference (`openinference.span.kind: LLM`; `input.value`,
  `output.value`, `llm.input_messages.N.message.content`, `llm.*`).

A span that is neither is dropped with a reason. A mapped span becomes a row
of the feedback format (see `rows.parse_row`): the prompt is the last user
message, the response the first output message, `model_version` the response
model (else the requested one), token counts, latency (end - start) and the
start time; its event id is `otel:<trace id>:<span id>`, so a span sent twice
is stored once and a rating can find it.

    >>> req = decode_request(body, "application/x-protobuf", "gzip", limit=1 << 24)
    >>> for item in spans(req, TracesConfig()):
    ...     print(item.reason if isinstance(item, DroppedSpan) else item.row["prompt"])
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from driftloop.core.config_traces import TracesConfig

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
EVENT_ID_PREFIX = "otel:"  # event ids: otel:<32 hex trace id>:<16 hex span id>
_ID_KEYS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}  # OTLP/JSON ids are hex, not base64 (bytes)
SESSION_KEYS = ("gen_ai.conversation.id", "session.id")
USER_KEYS = ("user.id", "enduser.id")


class OtlpError(ValueError):
    """A request body that is not an OTLP trace export: `status` (400, 413, 415) and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason

    def __reduce__(self) -> tuple[type[OtlpError], tuple[int, str]]:
        return OtlpError, (self.status, self.reason)  # picklable: it crosses from a parse worker process


@dataclass(frozen=True)
class MappedSpan:
    """A span that becomes a feedback event: its ids, when it ended, and the row for `parse_row`."""

    trace_id: str
    span_id: str
    ended: datetime | None
    row: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class DroppedSpan:
    """A span that is not an LLM call (or not one of the configured operations), and why."""

    trace_id: str
    span_id: str
    reason: str


# ------------------------------------------------------------------ decoding
def decode_request(body: bytes, content_type: str, encoding: str, limit: int) -> ExportTraceServiceRequest:
    """The export request in `body` (protobuf or OTLP/JSON; identity, gzip or deflate); raises OtlpError."""
    body = _decompress(body, encoding.strip().lower(), limit)
    kind = content_type.split(";")[0].strip().lower()
    req = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            req.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as e:
            raise OtlpError(400, f"body: malformed OTLP protobuf ({str(e)[:80] or 'cannot decode'})") from None
        return req
    if kind == JSON:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise OtlpError(400, f"body: malformed JSON ({str(e)[:80]})") from None
        if not isinstance(doc, dict):
            raise OtlpError(400, "body: not an OTLP ExportTraceServiceRequest object")
        try:
            json_format.ParseDict(_ids_to_base64(doc), req, ignore_unknown_fields=True)
        except (json_format.ParseError, RecursionError, ValueError, TypeError) as e:
            raise OtlpError(400, f"body: not an OTLP ExportTraceServiceRequest ({str(e)[:120]})") from None
        return req
    raise OtlpError(415, f"content type {kind or '(none)'!r}: use {PROTOBUF} or {JSON}")


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OtlpError(415, f"content encoding {encoding!r}: use gzip, deflate or none")
    # A bounded inflate: a small body must not expand past the limit (a compression bomb).
    d = zlib.decompressobj(wbits=(16 + zlib.MAX_WBITS) if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise OtlpError(400, f"body: malformed {encoding} stream ({e})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise OtlpError(413, f"body is over the limit of {limit} bytes once decompressed")
    if not d.eof:
        raise OtlpError(400, f"body: truncated {encoding} stream")
    return out


def _ids_to_base64(v: Any) -> Any:
    """OTLP/JSON with its hex trace and span ids as the base64 that protobuf's JSON parser reads for bytes."""
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, dict):
            for k, val in x.items():
                if k in _ID_KEYS and isinstance(val, str):
                    try:
                        raw = bytes.fromhex(val)
                    except ValueError:
                        raise OtlpError(400, f"body: {k} {val[:40]!r} is not hex") from None
                    x[k] = base64.b64encode(raw).decode()
                elif isinstance(val, (dict, list)):
                    stack.append(val)
    return v


def gzip_json(doc: Any) -> bytes:
    """gzip of a JSON document (for tests and clients that post OTLP/JSON)."""
    return gzip.compress(json.dumps(doc).encode())


# ------------------------------------------------------------------- mapping
def spans(req: ExportTraceServiceRequest, cfg: TracesConfig) -> Iterator[MappedSpan | DroppedSpan]:
    """Each span of the request, mapped to a feedback row or dropped with a reason."""
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                try:
                    yield map_span(span, resource, cfg)
                except (RecursionError, ValueError, TypeError, OverflowError):
                    # Attribute values nested past any message shape (a JSON string of 10,000 brackets):
                    # the span is counted with a reason, the request goes on.
                    yield DroppedSpan(span.trace_id.hex(), span.span_id.hex(), "span: attributes nested too deeply")


def map_span(span: Any, resource: dict[str, Any], cfg: TracesConfig) -> MappedSpan | DroppedSpan:
    """One OTLP span (and its resource's attributes) as a feedback row, or why it is dropped."""
    trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
    if len(trace_id) != 32 or len(span_id) != 16 or not trace_id.strip("0") or not span_id.strip("0"):
        return DroppedSpan(trace_id, span_id, "span: invalid trace or span id")
    attrs = attributes(span.attributes)
    events = [(e.name, attributes(e.attributes)) for e in span.events]
    kind = str(attrs.get("openinference.span.kind", "")).upper()
    if kind:
        if kind != "LLM":
            return DroppedSpan(trace_id, span_id, f"not an LLM span (openinference {kind.lower()})")
        row = _openinference(attrs)
    elif any(k.startswith("gen_ai.") for k in attrs) or any(n.startswith("gen_ai.") for n, _ in events):
        op = str(attrs.get("gen_ai.operation.name") or attrs.get("llm.request.type") or "chat")
        if op not in cfg.operations:
            return DroppedSpan(trace_id, span_id, f"not a chat or completion span (gen_ai {op})")
        row = _gen_ai(attrs, events)
    else:
        return DroppedSpan(trace_id, span_id, "not a GenAI or OpenInference span")
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    row["event_id"] = f"{EVENT_ID_PREFIX}{trace_id}:{span_id}"
    row["ts"] = _iso(start) if start else None
    if start and end >= start:
        row["latency_ms"] = (end - start) / 1e6
    meta = row.setdefault("metadata", {})
    meta.update({"trace_id": trace_id, "span_id": span_id, "span_name": span.name})
    if resource.get("service.name"):
        meta["service"] = str(resource["service.name"])
    for name, keys in (("session_id", SESSION_KEYS), ("user_id", USER_KEYS)):
        v = _first(attrs, keys)
        if v is not None:
            meta[name] = str(v)
    segment = {}
    for attr, key in cfg.segment_attributes.items():
        v = attrs.get(attr, resource.get(attr))
        if v is not None and v != "":
            segment[key] = v if isinstance(v, str) else json.dumps(v)
    if segment:
        row["segment"] = segment
    return MappedSpan(trace_id, span_id, _when(end) if end else None, {k: v for k, v in row.items() if v is not None})


def _gen_ai(attrs: dict[str, Any], events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Prompt, response and usage of a span under the GenAI semantic conventions (current or previous)."""
    inputs: list[Any] = []
    outputs: list[Any] = []
    # Current: structured messages in attributes (on the span or an operation-details event).
    for source in [attrs, *(a for _, a in events)]:
        inputs += _messages(source.get("gen_ai.input.messages"))
        outputs += _messages(source.get("gen_ai.output.messages"))
    # Events, one per message (semantic conventions 1.27-1.36).
    for name, a in events:
        if name in ("gen_ai.user.message", "gen_ai.system.message", "gen_ai.tool.message", "gen_ai.assistant.message"):
            role = name.split(".")[1]
            inputs.append({"role": role, "content": _first(a, ("content", "gen_ai.event.content", "message"))})
        elif name == "gen_ai.choice":
            outputs.append(_first(a, ("message", "message.content", "content", "gen_ai.event.content")))
        elif name == "gen_ai.content.prompt":
            inputs += _messages(a.get("gen_ai.prompt"))
        elif name == "gen_ai.content.completion":
            outputs += _messages(a.get("gen_ai.completion"))
    # Previous: one indexed attribute per message.
    if not inputs:
        inputs = [{"role": m.get("role"), "content": m.get("content")} for m in _indexed(attrs, "gen_ai.prompt")]
    if not outputs:
        outputs = [{"role": m.get("role"), "content": m.get("content")} for m in _indexed(attrs, "gen_ai.completion")]
    provider = _first(attrs, ("gen_ai.provider.name", "gen_ai.system"))
    return {
        "prompt": prompt_of(inputs),
        "response": text_of(outputs[0]) if outputs else None,
        "model_version": _first(attrs, ("gen_ai.response.model", "gen_ai.request.model")),
        "tokens_in": _first(attrs, ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")),
        "tokens_out": _first(attrs, ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")),
        "metadata": {
            "conventions": "gen_ai",
            "operation": str(attrs.get("gen_ai.operation.name") or "chat"),
            **({"provider": str(provider)} if provider else {}),
        },
    }


def _openinference(attrs: dict[str, Any]) -> dict[str, Any]:
    """Prompt, response and usage of an OpenInference LLM span."""
    inputs = [m.get("message", m) for m in _indexed(attrs, "llm.input_messages")]
    outputs = [m.get("message", m) for m in _indexed(attrs, "llm.output_messages")]
    prompt = prompt_of(inputs) if inputs else _value_text(attrs.get("input.value"), "input")
    response = text_of(outputs[0]) if outputs else _value_text(attrs.get("output.value"), "output")
    provider = _first(attrs, ("llm.provider", "llm.system"))
    return {
        "prompt": prompt,
        "response": response,
        "model_version": attrs.get("llm.model_name"),
        "tokens_in": attrs.get("llm.token_count.prompt"),
        "tokens_out": attrs.get("llm.token_count.completion"),
        "metadata": {"conventions": "openinference", **({"provider": str(provider)} if provider else {})},
    }


def _value_text(v: Any, side: str) -> str | None:
    """`input.value` / `output.value`: plain text, or JSON holding messages (OpenAI request or response shape)."""
    if not isinstance(v, str):
        return None if v is None else json.dumps(v)
    s = v.strip()
    if not s.startswith(("{", "[")):
        return v
    try:
        doc = json.loads(s)
    except ValueError:
        return v
    if side == "input" and isinstance(doc, dict) and isinstance(doc.get("messages"), list):
        return prompt_of(doc["messages"]) or v
    if side == "output" and isinstance(doc, dict) and isinstance(doc.get("choices"), list) and doc["choices"]:
        return text_of(doc["choices"][0]) or v
    return v


def prompt_of(messages: list[Any]) -> str | None:
    """The text of the last user message (of the last message where none has a role)."""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    pick = users or [m for m in messages if not (isinstance(m, dict) and m.get("role") in ("system", "developer"))]
    for m in reversed(pick):
        t = text_of(m)
        if t:
            return t
    return None


def text_of(m: Any) -> str:
    """The text of a message in any of the shapes the conventions use: a string, `content`, text `parts`."""
    if isinstance(m, str):
        return m
    if isinstance(m, list):
        return "\n".join(t for t in (text_of(x) for x in m) if t)
    if isinstance(m, dict):
        if isinstance(m.get("parts"), list):
            return "\n".join(text_of(p) for p in m["parts"] if isinstance(p, dict) and p.get("type", "text") == "text")
        for k in ("content", "text", "message"):
            if m.get(k) is not None:
                return text_of(m[k])
    return ""


def _messages(v: Any) -> list[Any]:
    """A messages value: a JSON string or an array of messages; a lone string is one message."""
    if v is None:
        return []
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return [v]
    if isinstance(v, dict):
        return [v]
    return list(v) if isinstance(v, list) else [v]


def _indexed(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """`prefix.N.rest` attributes as a list of dicts by N (nested: `message.content` -> {message: {content}})."""
    by: dict[int, dict[str, Any]] = {}
    head = prefix + "."
    for k, v in attrs.items():
        if not k.startswith(head):
            continue
        n, _, rest = k[len(head) :].partition(".")
        if not n.isdigit() or not rest:
            continue
        node = by.setdefault(int(n), {})
        *path, last = rest.split(".")
        for p in path:
            nxt = node.get(p)
            node = node.setdefault(p, {}) if not isinstance(nxt, dict) else nxt
        node[last] = v
    return [by[i] for i in sorted(by)]


def _first(attrs: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = attrs.get(k)
        if v is not None and v != "":
            return v
    return None


def attributes(kvs: Any) -> dict[str, Any]:
    """OTLP key-values as a plain dict (arrays as lists, kvlists as dicts, bytes as hex)."""
    return {kv.key: any_value(kv.value) for kv in kvs}


def any_value(v: AnyValue) -> Any:
    """An OTLP AnyValue as a plain Python value."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


def _when(ns: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(ns / 1e9, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _iso(ns: int) -> str | None:
    t = _when(ns)
    return t.isoformat() if t else str(ns)


__all__ = ["DroppedSpan", "MappedSpan", "OtlpError", "decode_request", "map_span", "prompt_of", "spans", "text_of"]
