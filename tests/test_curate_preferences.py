"""Curation of every kind of feedback: corrections, thumbs, ratings and pairs on one prompt."""

from __future__ import annotations

from retrain.curate import auto_objective, build_preference_set, feedback_label


def ev(eid, prompt, response, thumbs=None, rating=None):
    return {"event_id": eid, "prompt": prompt, "response": response, "thumbs_up": thumbs, "rating": rating}


def test_each_kind_of_feedback_feeds_its_objective_with_its_sources():
    corrected = [
        {
            "item_id": "c1",
            "prompt": "refund?",
            "answer": "refunds take 5 days.",
            "response": "track it.",
            "source_event_id": "e-c1",
        }
    ]
    rated = [
        ev("a1", "where is my order", "track it online.", thumbs=True),
        ev("a2", "Where is  my order", "no idea.", thumbs=False),  # same prompt, opposite thumbs
        ev("b1", "reset password", "use the link.", rating=0.9),
        ev("b2", "cancel plan", "cannot help.", rating=0.1),
        ev("b3", "change email", "maybe.", rating=0.5),
    ]  # neutral: says nothing
    rows, m = build_preference_set(rated, corrected)
    by_id = {r["id"]: r for r in rows}
    assert by_id["sft-c1"]["completion"] == "refunds take 5 days." and by_id["sft-c1"]["sources"] == ["e-c1"]
    assert (by_id["dpo-c1"]["chosen"], by_id["dpo-c1"]["rejected"]) == ("refunds take 5 days.", "track it.")
    pair = by_id["dpo-a1-a2"]
    assert (pair["chosen"], pair["rejected"], pair["sources"]) == ("track it online.", "no idea.", ["a1", "a2"])
    assert by_id["kto-b1"]["label"] is True and by_id["kto-b2"]["label"] is False and "kto-b3" not in by_id
    assert m["counts"] == {"sft": 1, "dpo": 2, "kto": 2} and m["objective"] == "mixed"
    assert m["sources"]["dpo-a1-a2"] == ["a1", "a2"]


def test_kto_weights_balance_desirable_and_undesirable():
    rated = [ev(f"u{i}", f"q{i}", "fine.", thumbs=True) for i in range(6)]
    rated += [ev(f"d{i}", f"p{i}", "bad.", thumbs=False) for i in range(2)]
    rows, m = build_preference_set(rated, [])
    assert m["objective"] == "kto" and (m["kto_desirable"], m["kto_undesirable"]) == (6, 2)
    # desirable weight x 6 == undesirable weight x 2: TRL's recommended ratio of 1.
    wd, wu = m["kto_weights"]
    assert abs(wd * 6 - wu * 2) < 1e-9


def test_a_pair_rated_both_ways_on_the_same_text_is_quarantined():
    rows, m = build_preference_set([ev("x", "hi", "same.", thumbs=True), ev("y", "hi", "same.", thumbs=False)], [])
    assert m["quarantined"]["identical_pair"] == 1 and not any(r["objective"] == "dpo" for r in rows)


def test_labels_and_objective_choice():
    assert feedback_label({"thumbs_up": False, "rating": 0.9}) == 0.0  # thumbs win over a rating
    assert feedback_label({"thumbs_up": None, "rating": None}) is None
    assert auto_objective({"sft": 3}) == "sft" and auto_objective({"dpo": 1}) == "dpo"
    assert auto_objective({"kto": 4, "sft": 0}) == "kto" and auto_objective({}) == "none"
