"""Real preference feedback: Anthropic's HH-RLHF pairs (harmless-base test, first half), converted by
`driftloop convert-pairs` and ingested by `driftloop ingest` as two rated events per pair, then
split by prompt hash: the training side trains DPO and KTO on the demo model, the golden side is
the preference suite the gate decides on (win rate of the chosen reply, paired per item).

The data lives beside the project (../shared/data); the test skips where it is absent."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from driftloop.app.cli import main
from driftloop.core.config import TaskSpec, load_config
from driftloop.core.gate import gate
from driftloop.core.types import Action
from driftloop.services.preference import golden_pairs
from driftloop.store import Store
from driftloop.store.feedback_reads import rated_events
from evaluators.benchmark import run_tasks
from evaluators.golden import TRAIN, exclude_near_duplicates, split_of
from evaluators.preference_task import PREFERENCE_TASK, reward_margin, write_preference_task
from retrain.curate import build_preference_set, write_jsonl
from retrain.spec import RetrainSpec
from retrain.trainer import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test-first-half.jsonl.gz"
MAX_CHARS = 250  # the demo model reads 128 tokens: pairs that fit it (191 of the 1,156)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.is_file(), reason=f"HH-RLHF data not found at {DATA} (../shared/data beside the repo)"),
]


def test_hh_rlhf_pairs_train_dpo_and_kto_and_the_gate_decides_on_held_out_pairs(
    tmp_path, demo_model, one_torch_thread, capsys
):
    cfg_path = tmp_path / "driftloop.yaml"
    cfg_path.write_text(
        f"project: hh\nstate_dir: state\nmodel: {{base: {demo_model}}}\n"
        "sources: [{path: feedback/*.jsonl}]\npolicy: {min_n: 30}\n"
    )
    feedback = tmp_path / "feedback" / "hh.jsonl"
    assert main(["convert-pairs", str(DATA), str(feedback), "--max-chars", str(MAX_CHARS)]) == 0
    assert "1156 pairs -> 382 events" in capsys.readouterr().out.replace("\n", " ")
    assert main(["--config", str(cfg_path), "ingest"]) == 0
    cfg = load_config(cfg_path)
    store = Store(cfg.store_url)
    rated = rated_events(store)
    assert len(rated) == 382 and sum(bool(e["thumbs_up"]) for e in rated) == 191

    # The golden side: the preference suite. The training side: what trains. No prompt in both.
    held, quarantined = golden_pairs(store, cfg.golden)
    train_events = [e for e in rated if split_of(e["prompt"], store.item_splits(), cfg.golden) == TRAIN]
    train_events = exclude_near_duplicates(train_events, [p["prompt"] for p in held], cfg.golden.near_dup_jaccard)
    rows, manifest = build_preference_set(train_events, [])
    pairs = [r for r in rows if r["objective"] == "dpo"]
    assert len(held) >= cfg.policy.min_n and len(pairs) >= 60, (len(held), len(pairs))
    assert not {r["prompt"] for r in rows} & {p["prompt"] for p in held}

    task = write_preference_task(held, tmp_path / "task")
    spec = TaskSpec(name=PREFERENCE_TASK, kind="preference")
    champ = run_tasks(demo_model, [spec], [task.yaml_path.parent], batch_size=32, model_id="champion")
    verdicts = {}
    for objective in ("dpo", "kto"):
        if objective == "dpo":
            data = pairs
        else:  # the same feedback as single thumbs (TRL's unpairing): chosen desirable, rejected not
            data = [
                {"id": f"{r['id']}-{side}", "prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
                for r in pairs
                for side in ("chosen", "rejected")
            ]
        path = write_jsonl(data, tmp_path / objective / "data.jsonl")
        result = train(
            RetrainSpec(
                base_model=str(demo_model),
                data_path=str(path),
                output_dir=str(tmp_path / objective / "result"),
                device="cpu",
                objective=objective,
                epochs=4.0,
                max_length=128,
                batch_size=16,
                learning_rate=2e-3,
            )
        )
        chall = run_tasks(result.model_dir, [spec], [task.yaml_path.parent], batch_size=32, model_id=objective)
        d = gate({"preference": chall.samples}, {"preference": champ.samples}, {"preference": "target"}, cfg.policy)
        win = next(m for m in chall.metrics if m.name == f"{PREFERENCE_TASK}/acc_norm")
        base = next(m for m in champ.metrics if m.name == f"{PREFERENCE_TASK}/acc_norm")
        margin = reward_margin(chall.samples[0])
        finding = d.findings[0]
        print(
            f"hh-rlhf {objective}: {len(data)} rows; held-out pairs n={win.n}; win rate champion {base.value:.3f} "
            f"[{base.ci_low:.3f}, {base.ci_high:.3f}] -> {objective} {win.value:.3f} [{win.ci_low:.3f}, "
            f"{win.ci_high:.3f}] (95% Wilson); paired gain {finding.estimate:+.3f} [{finding.ci_low:+.3f}, "
            f"{finding.ci_high:+.3f}] p={finding.p_value:.3g}; reward margin {margin.value:+.3f} nats "
            f"[{margin.ci_low:+.3f}, {margin.ci_high:+.3f}]; verdict {d.action.value}: {'; '.join(d.reasons)}"
        )
        # A well-formed interval around each win rate, and a legal verdict with its reasons.
        for m in (base, win):
            assert m.n == len(held) and 0.0 <= m.ci_low <= m.value <= m.ci_high <= 1.0
        assert finding.kind == "gain" and finding.n == len(held)
        assert finding.ci_low <= finding.estimate <= finding.ci_high and not math.isnan(finding.p_value)
        assert d.action in (Action.PROMOTE, Action.REJECT) and d.reasons
        assert (d.action == Action.PROMOTE) == bool(finding.passed)
        assert margin.n == len(held) and margin.ci_low < margin.value < margin.ci_high
        verdicts[objective] = d.action
    assert quarantined == 0 and set(verdicts) == {"dpo", "kto"}  # HH-RLHF has no pair with one reply twice
