"""`driftloop convert-pairs`: a pair row (two whole conversations) becomes two rated events on the
shared prompt, and `driftloop ingest` reads them as ordinary feedback."""

from __future__ import annotations

import gzip
import json

from driftloop.app.cli import main
from driftloop.ingest.pairs import convert_pairs, split_conversation

H = "\n\nHuman: how do i return a lamp?\n\nAssistant: Which store?\n\nHuman: the online one"


def _pair(good: str, bad: str, head: str = H) -> dict:
    return {"chosen": f"{head}\n\nAssistant: {good}", "rejected": f"{head}\n\nAssistant: {bad}"}


def test_split_conversation_keeps_the_turns_before_the_last_reply():
    prompt, reply = split_conversation(H + "\n\nAssistant: Use the returns page.")
    assert prompt == H.strip() + "\n\nAssistant:" and reply == "Use the returns page."
    assert split_conversation("\n\nHuman: hi") is None


def test_each_pair_becomes_a_thumbs_up_and_a_thumbs_down_on_one_prompt(tmp_path, capsys):
    src = tmp_path / "pairs.jsonl.gz"
    rows = [
        _pair("Use the returns page.", "Go away."),
        _pair("Sure.", "No.", head="\n\nHuman: other question"),
        {"chosen": _pair("a", "b")["chosen"], "rejected": _pair("a", "b", head="\n\nHuman: x")["rejected"]},
        _pair("x" * 500, "short"),
    ]
    with gzip.open(src, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    dest = tmp_path / "feedback" / "pairs.jsonl"
    assert main(["convert-pairs", str(src), str(dest), "--max-chars", "300"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "4 pairs -> 4 events" in out
    assert "conversations differ before the last reply x1" in out and "longer than --max-chars x1" in out
    events = [json.loads(line) for line in dest.read_text().splitlines()]
    assert [(e["response"], e["thumbs_up"]) for e in events] == [
        ("Use the returns page.", True),
        ("Go away.", False),
        ("Sure.", True),
        ("No.", False),
    ]
    assert events[0]["prompt"] == events[1]["prompt"] == H.strip() + "\n\nAssistant:"
    assert events[0]["segment"] == {"source": "pairs"} and events[0]["ts"] == events[1]["ts"]

    cfg = tmp_path / "driftloop.yaml"
    cfg.write_text("project: p\nstate_dir: state\nsources: [{path: feedback/*.jsonl}]\n")
    assert main(["--config", str(cfg), "ingest"]) == 0
    assert "read 4 = accepted 4 + duplicates 0 + quarantined 0" in capsys.readouterr().out


def test_bad_pair_files_are_one_line_and_exit_2_with_nothing_written(tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(_pair("a", "b")) + "\n" + json.dumps({"chosen": "only"}) + "\n")
    dest = tmp_path / "out.jsonl"
    assert main(["convert-pairs", str(src), str(dest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"driftloop: error: {src}:2: expected an object with string fields 'chosen' and 'rejected'"]
    assert not dest.exists() and list(tmp_path.iterdir()) == [src]
    assert main(["convert-pairs", str(tmp_path / "missing.jsonl"), str(dest)]) == 2
    assert main(["convert-pairs", str(src), str(dest), "--limit", "0"]) == 2
    stats = convert_pairs(src, dest, limit=1)
    assert (stats.pairs, stats.events) == (1, 2)
