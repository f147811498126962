"""benchmarks/redaction_corpus.py: the redactor meets its goals on the labelled corpus (recall >= 0.98 per
kind, false positives <= 1% of the hard negatives)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "redaction_corpus.py"


def load():
    spec = importlib.util.spec_from_file_location("redaction_corpus", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_the_redactor_meets_the_corpus_goals(capsys):
    corpus = load()
    rep = corpus.run()
    assert rep.strings >= 200 and rep.negatives >= 100
    assert {k.kind for k in rep.kinds} == {"phone", "card", "email", "ip", "key"}
    for k in rep.kinds:
        assert k.recall >= corpus.RECALL_GOAL, (k.kind, k.missed)
    assert rep.fp_rate <= corpus.FP_GOAL, rep.fp_examples
    assert corpus.main([]) == 0
    out = capsys.readouterr().out
    assert "goals: recall >= 0.98 per kind, false positives <= 1%: met" in out


def test_the_benchmark_reports_a_miss():
    corpus = load()
    from driftloop.ingest.redact import Redactor

    rep = corpus.run(Redactor(builtin=["email", "card", "ip", "key"]))  # no phone detector
    phone = next(k for k in rep.kinds if k.kind == "phone")
    assert phone.recall == 0.0 and not rep.ok
