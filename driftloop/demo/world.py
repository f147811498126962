"""The demo's small, fully offline world: a customer-support assistant.

The base model learns three topics (account, shipping, returns). Production
then shifts: a new topic, billing, appears, the champion answers it with
answers from the topics it knows, ratings drop, and users send corrections.
Everything here is deterministic given a seed and needs only the standard
library, so the demo, the canary task and the tests agree on one world.

    >>> events = simulate(seed=0)
    >>> sum(e["segment"]["topic"] == "billing" for e in events) > 0
    True
    >>> format_example("how do i reset my password", "use the link.")
    'Q: how do i reset my password\\nA: use the link.'
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

PRODUCTS = ["laptop", "phone", "camera", "headset", "tablet", "watch", "speaker", "monitor"]
GREETINGS = ["", "hi,", "hello,", "hey there,", "good morning,", "quick question:", "excuse me,"]
SUFFIXES = ["", "thanks", "please help", "asap", "i am confused", "thank you so much"]

# topic -> intent -> (question templates, canned ideal answer)
INTENTS: dict[str, dict[str, tuple[list[str], str]]] = {
    "account": {
        "reset_password": (
            [
                "how do i reset my password",
                "i forgot my password",
                "cannot sign in to my account",
                "my password for the {product} app does not work",
                "how can i change my password",
            ],
            "use the forgot password link on the sign in page.",
        ),
        "change_email": (
            [
                "how do i change my email",
                "i want a new email on my account",
                "update the email address on my profile",
                "my email changed, how do i update it",
            ],
            "you can change your email under profile settings.",
        ),
        "delete_account": (
            [
                "how do i delete my account",
                "please close my account",
                "i want to remove all my data",
                "cancel my account for good",
            ],
            "contact support from the help page to delete your account.",
        ),
        "two_factor": (
            [
                "how do i turn on two factor login",
                "can i add a second login step",
                "set up two step verification",
                "make my account more secure",
            ],
            "turn on two factor login in the security tab.",
        ),
    },
    "shipping": {
        "track_order": (
            [
                "where is my {product}",
                "how do i track my order",
                "track the {product} i ordered",
                "my {product} has not arrived yet",
                "what is the status of my order",
            ],
            "you can track your order from the orders page.",
        ),
        "shipping_time": (
            [
                "how long does shipping take",
                "when will my {product} arrive",
                "how many days until the {product} ships",
                "what is the delivery time",
            ],
            "standard shipping takes three to five days.",
        ),
        "shipping_cost": (
            [
                "how much is shipping",
                "is shipping free",
                "what does delivery of a {product} cost",
                "do i pay for shipping",
            ],
            "shipping is free on orders over fifty dollars.",
        ),
        "international": (
            [
                "do you ship abroad",
                "can you send the {product} to another country",
                "do you deliver outside the country",
                "is international shipping possible",
            ],
            "we ship to over forty countries.",
        ),
    },
    "returns": {
        "return_policy": (
            [
                "can i return my {product}",
                "what is your return policy",
                "how long do i have to return an item",
                "i want to send the {product} back",
            ],
            "you can return any item within thirty days.",
        ),
        "return_label": (
            [
                "how do i get a return label",
                "where is the label for my return",
                "print a label to send the {product} back",
                "i need a shipping label for a return",
            ],
            "print a return label from the orders page.",
        ),
        "exchange": (
            [
                "can i exchange my {product}",
                "i want a different color",
                "swap the {product} for another size",
                "how do exchanges work",
            ],
            "exchanges are free for a different size or color.",
        ),
        "damaged": (
            [
                "my {product} arrived broken",
                "the {product} is damaged",
                "the screen of my {product} is cracked",
                "what if an item arrives damaged",
            ],
            "send us a photo of the damage and we will replace it.",
        ),
    },
    "billing": {
        "refund_time": (
            [
                "when will i get my refund",
                "how long does a refund take",
                "my refund for the {product} is late",
                "where is my money for the {product}",
                "the refund has not reached my card",
            ],
            "refunds reach your card within five business days.",
        ),
        "invoice": (
            [
                "where can i find my invoice",
                "i need an invoice for the {product}",
                "download a receipt for my order",
                "send me the invoice please",
                "how do i get a bill for my purchase",
            ],
            "download every invoice from the billing page.",
        ),
        "double_charge": (
            [
                "i was charged twice",
                "why did you bill me two times for the {product}",
                "there are two payments on my card",
                "double charge on my statement",
            ],
            "a double charge is a card hold that disappears within two days.",
        ),
        "payment_methods": (
            [
                "which payment methods do you accept",
                "can i pay with paypal",
                "can i pay for the {product} with a gift card",
                "do you take credit cards",
            ],
            "we accept cards, paypal and gift cards.",
        ),
    },
}
BASE_TOPICS = ["account", "shipping", "returns"]
NEW_TOPIC = "billing"
LOCALES = ["en-US", "en-GB", "en-IN"]
TIERS = ["free", "pro"]


def format_example(prompt: str, answer: str | None = None) -> str:
    """The model's text format: `Q: ...\\nA: ...` (the answer part left open when None)."""
    head = f"Q: {prompt}\nA:"
    return head if answer is None else f"{head} {answer}"


def answer_for(topic: str, intent: str) -> str:
    return INTENTS[topic][intent][1]


def all_answers(topics: list[str] | None = None) -> list[str]:
    """Distinct canned answers of the given topics (all topics when None), in a fixed order."""
    topics = topics or list(INTENTS)
    return [INTENTS[t][i][1] for t in topics for i in INTENTS[t]]


def make_question(rng: random.Random, topic: str, intent: str) -> str:
    template = rng.choice(INTENTS[topic][intent][0])
    q = template.format(product=rng.choice(PRODUCTS))
    parts = [rng.choice(GREETINGS), q, rng.choice(SUFFIXES)]
    return " ".join(p for p in parts if p)


def training_corpus(n: int = 6000, seed: int = 0, topics: list[str] | None = None) -> list[tuple[str, str]]:
    """(question, answer) pairs for the base model: base topics only unless told otherwise."""
    rng = random.Random(seed)
    topics = topics or BASE_TOPICS
    out = []
    for _ in range(n):
        t = rng.choice(topics)
        i = rng.choice(list(INTENTS[t]))
        out.append((make_question(rng, t, i), answer_for(t, i)))
    return out


def tokenizer_corpus(seed: int = 0) -> list[str]:
    """Text the tokenizer is trained on: every topic's vocabulary (as a general tokenizer would know it)."""
    pairs = training_corpus(n=4000, seed=seed + 1, topics=list(INTENTS))
    return [format_example(q, a) for q, a in pairs]


def canary_items(n: int = 120, seed: int = 12345, num_choices: int = 4) -> list[dict[str, Any]]:
    """A frozen multiple-choice check of the base topics (catastrophic-forgetting guard)."""
    rng = random.Random(seed)
    answers = all_answers(BASE_TOPICS)
    items, seen = [], set()
    while len(items) < n:
        t = rng.choice(BASE_TOPICS)
        i = rng.choice(list(INTENTS[t]))
        q = make_question(rng, t, i)
        if q in seen:
            continue
        seen.add(q)
        gold = answer_for(t, i)
        distractors = rng.sample([a for a in answers if a != gold], num_choices - 1)
        choices = distractors + [gold]
        rng.shuffle(choices)
        items.append(
            {
                "id": "canary-" + hashlib.sha256(q.encode()).hexdigest()[:12],
                "prompt": q,
                "choices": choices,
                "label": choices.index(gold),
                "topic": t,
            }
        )
    return items


def _stars(rng: random.Random, good: bool) -> int:
    weights = [0.0, 0.02, 0.08, 0.3, 0.6] if good else [0.55, 0.3, 0.1, 0.04, 0.01]
    return rng.choices([1, 2, 3, 4, 5], weights=weights)[0]


def simulate(
    seed: int = 0,
    start: datetime | None = None,
    baseline_days: int = 7,
    shifted_days: int = 1,
    per_day: int = 300,
    shifted_per_day: int = 700,
    new_topic_share: float = 0.45,
    champion_accuracy: float = 0.92,
    correction_rate: float = 0.6,
    model_version: str = "1",
    retry_rate: float = 0.0,
    retry_right: float = 0.8,
) -> list[dict[str, Any]]:
    """Production feedback: a baseline period, then a shifted one in which billing appears.

    Each event is a plain dict in the JSONL feedback format: `ts` ISO-8601 with a
    timezone, `rating` as 1-5 stars (normalised at ingestion), `thumbs_up`,
    `correction` where the user gave one, `segment` with topic, locale and tier.
    The champion answers known topics right with `champion_accuracy`; billing
    questions get an answer from a known topic, so they are always wrong.

    `retry_rate`: the share of users who, after a wrong reply, ask for another one (regenerate)
    and rate it too: a second event on the same prompt a minute later, whose reply is the right
    one with `retry_right` (the help-centre answer a retry finds), else another wrong one. Two
    replies to one prompt rated differently are a preference pair. The thumbs-only world
    (`thumbs_world`) has retries and no corrections; the default world has neither retries nor
    a change to its random stream.
    """
    rng = random.Random(seed)
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    events: list[dict[str, Any]] = []
    known = [(t, i) for t in BASE_TOPICS for i in INTENTS[t]]
    periods = [(d, per_day, 0.0) for d in range(baseline_days)]
    periods += [(baseline_days + d, shifted_per_day, new_topic_share) for d in range(shifted_days)]
    for day, count, share in periods:
        for k in range(count):
            ts = start + timedelta(days=day, seconds=int((k + rng.random()) * 86400 / count))
            if rng.random() < share:
                topic = NEW_TOPIC
                intent = rng.choice(list(INTENTS[NEW_TOPIC]))
            else:
                topic, intent = rng.choice(known)
            prompt = make_question(rng, topic, intent)
            right = answer_for(topic, intent)
            if topic != NEW_TOPIC and rng.random() < champion_accuracy:
                response = right
            else:
                wrong_t, wrong_i = rng.choice([x for x in known if x != (topic, intent)])
                response = answer_for(wrong_t, wrong_i)
            good = response == right
            stars = _stars(rng, good)
            thumbs = stars >= 4 if rng.random() < 0.9 else stars >= 3
            correction = right if (not good and rng.random() < correction_rate) else None
            event = {
                "ts": ts.isoformat(),
                "model_version": model_version,
                "prompt": prompt,
                "response": response,
                "rating": stars,
                "thumbs_up": thumbs,
                "correction": correction,
                "segment": {"topic": topic, "locale": rng.choice(LOCALES), "tier": rng.choice(TIERS)},
                "latency_ms": round(rng.lognormvariate(5.0 if topic != NEW_TOPIC else 5.3, 0.3), 1),
                "tokens_in": len(prompt.split()) + 3,
                "tokens_out": len(response.split()) + 1,
            }
            events.append(event)
            if retry_rate and not good and rng.random() < retry_rate:
                if rng.random() < retry_right:
                    again = right
                else:
                    again = answer_for(
                        *rng.choice([x for x in known if x != (topic, intent) and answer_for(*x) != response])
                    )
                stars = _stars(rng, again == right)
                events.append(
                    {
                        **event,
                        "ts": (ts + timedelta(seconds=60)).isoformat(),
                        "response": again,
                        "rating": stars,
                        "thumbs_up": stars >= 4 if rng.random() < 0.9 else stars >= 3,
                        "tokens_out": len(again.split()) + 1,
                    }
                )
    return events


def thumbs_world(seed: int = 0, start: datetime | None = None) -> list[dict[str, Any]]:
    """The demo world with thumbs and star ratings only: no user writes a correction, and half of
    the users who got a wrong reply ask for another one and rate it (`simulate`'s `retry_rate`)."""
    return simulate(seed=seed, start=start, correction_rate=0.0, retry_rate=0.5)
