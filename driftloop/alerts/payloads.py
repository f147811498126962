"""Request bodies for each webhook format, as the exact bytes that are signed and sent (pure).

`json` is the event itself (see `events.AlertEvent`); `slack` is a body that
Slack's incoming webhooks (and Mattermost, Rocket.Chat) accept: `text` as the
notification fallback and `blocks` for the message.

    >>> body = render(event, "slack")
    >>> json.loads(body)["text"]
    'Candidate promoted: shop, driftloop-model v2'
"""

from __future__ import annotations

import json
from typing import Any

from driftloop.alerts.events import TITLES, AlertEvent

# Slack limits: a header's text is at most 150 characters, a section's 3000, a message 50 blocks.
_HEADER_MAX, _SECTION_MAX, _REASONS_MAX = 150, 3000, 20
_EMOJI = {
    "regression.detected": ":warning:",
    "retrain.started": ":hourglass_flowing_sand:",
    "retrain.finished": ":white_check_mark:",
    "retrain.failed": ":x:",
    "retrain.skipped": ":grey_question:",
    "candidate.promoted": ":rocket:",
    "candidate.rejected": ":no_entry:",
    "champion.rolled_back": ":leftwards_arrow_with_hook:",
    "ingest.quarantine": ":rotating_light:",
    "alert.test": ":bell:",
}


def json_body(event: AlertEvent) -> dict[str, Any]:
    """The generic JSON payload: every field of the event (timestamps in ISO 8601, UTC)."""
    return event.model_dump(mode="json")


def slack_body(event: AlertEvent) -> dict[str, Any]:
    """A Slack-compatible payload: `text` (the summary) and `blocks` (header, facts, reasons, link)."""
    facts = [f"*Project:* {_esc(event.project)}", f"*Model:* {_esc(event.model.name)}"]
    if event.model.version:
        facts.append(f"*Version:* {_esc(event.model.version)}")
    if event.model.previous_version:
        facts.append(f"*Previous:* {_esc(event.model.previous_version)}")
    if event.cycle:
        facts.append(f"*Cycle:* {_esc(event.cycle)}")
    facts += [f"*{_esc(k)}:* {_esc(str(v))}" for k, v in event.data.items() if isinstance(v, (int, float, str))][:4]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(f"{TITLES.get(event.type, event.type)}", _HEADER_MAX)},
        },
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, 2000)} for f in facts[:10]]},
    ]
    if event.reasons:
        lines = [f"• {_esc(r)}" for r in event.reasons[:_REASONS_MAX]]
        if len(event.reasons) > _REASONS_MAX:
            lines.append(f"… and {len(event.reasons) - _REASONS_MAX} more")
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut("*Reasons*\n" + "\n".join(lines), _SECTION_MAX)},
            }
        )
    context = [f"`{event.type}`", event.timestamp.strftime("%Y-%m-%d %H:%M:%S UTC"), f"id {event.id}"]
    if event.mlflow.url:
        context.append(f"<{event.mlflow.url}|MLflow run>")
    elif event.mlflow.run_id:
        context.append(f"MLflow run {event.mlflow.run_id}")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " | ".join(context)}]})
    return {"text": f"{_EMOJI.get(event.type, '')} {_esc(event.summary)}".strip(), "blocks": blocks}


def render(event: AlertEvent, fmt: str) -> bytes:
    """The body for `fmt` (`json` or `slack`) as compact UTF-8 JSON bytes: what is signed is what is sent."""
    body = json_body(event) if fmt == "json" else slack_body(event) if fmt == "slack" else None
    if body is None:
        raise ValueError(f"unknown alert format {fmt!r}")
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _esc(text: str) -> str:
    # Slack mrkdwn reads <...> as links and & as an entity: reasons such as "p<0.001 -> 0.62" must be escaped.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
