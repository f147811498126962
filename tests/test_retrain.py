"""The fine-tuning job: spec validation, completion-only SFT, LoRA keeps the
base frozen, full fine-tuning does not, atomic output, the job's exit codes,
curation with replay, and (slow) that LoRA teaches the demo's new topic.

Most tests train a random-init 1-layer GPT-2 for a few steps; only the
learning test uses the real demo model (conftest's session fixture `demo_model`).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from driftloop.demo import world
from retrain import job
from retrain.curate import build_training_set, carry_replay, load_replay, write_jsonl
from retrain.spec import RetrainSpec, example_hash
from retrain.trainer import encode_example, fit, load_examples, load_model, train

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="session")
def tiny_base(make_tiny_gpt2) -> Path:
    """A random-init 1-layer GPT-2 with the demo's tokenizer."""
    return make_tiny_gpt2()


def _spec(base, data, out, **kw) -> RetrainSpec:
    kw = {"batch_size": 4, "max_steps": 3, "device": "cpu", "learning_rate": 1e-2, **kw}
    return RetrainSpec(base_model=str(base), data_path=str(data), output_dir=str(out), **kw)


def _folder_state(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


# --- spec -------------------------------------------------------------------------------------


def test_spec_round_trips_through_json(tiny_base, data_file, tmp_path):
    spec = _spec(tiny_base, data_file, tmp_path / "out", method="full", target_modules=["c_attn"], max_steps=None)
    spec.to_json(tmp_path / "spec.json")
    back = RetrainSpec.from_json(tmp_path / "spec.json")
    assert back == spec
    assert isinstance(back.epochs, float) and back.max_steps is None


@pytest.mark.parametrize(
    "change, field",
    [
        ({"lora_rank": 8}, "lora_rank: unknown field (did you mean 'lora_r'?)"),
        ({"lora_r": "16"}, "lora_r: expected an integer"),
        ({"epochs": True}, "epochs: expected a number"),
        ({"target_modules": "c_attn"}, "target_modules: expected a list of strings"),
        ({"method": "dora"}, "method: must be one of lora, qlora, full"),
        ({"data_path": "/nonexistent/train.jsonl"}, "data_path: no data file at /nonexistent/train.jsonl"),
        ({"base_model": "/nonexistent/model"}, "base_model: no model folder at /nonexistent/model"),
    ],
)
def test_spec_rejects_bad_field_by_name(tiny_base, data_file, tmp_path, change, field):
    data = {**_spec(tiny_base, data_file, tmp_path / "out").to_dict(), **change}
    (tmp_path / "spec.json").write_text(json.dumps(data))
    with pytest.raises(ValueError) as err:
        RetrainSpec.from_json(tmp_path / "spec.json")
    assert str(err.value).startswith(field)


def test_spec_requires_base_model_data_and_output(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"base_model": "m", "data_path": "d.jsonl"}))
    with pytest.raises(ValueError, match="^output_dir: missing field$"):
        RetrainSpec.from_json(tmp_path / "spec.json")


def test_default_prompt_template_is_the_demo_text_format():
    spec = RetrainSpec(base_model="m", data_path="d", output_dir="o")
    prompt = "i was charged twice"
    assert spec.prompt_template.replace("{prompt}", prompt) == world.format_example(prompt)


# --- trainer ----------------------------------------------------------------------------------


def test_loss_covers_completion_tokens_only(tiny_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    ex = {"id": "a", "prompt": "hi, i was charged twice", "completion": "a double charge is a card hold."}
    enc = encode_example(tok, ex, RetrainSpec(base_model="m", data_path="d", output_dir="o").prompt_template)
    n_prompt = len(tok(world.format_example(ex["prompt"]))["input_ids"])
    assert enc.input_ids == tok(world.format_example(ex["prompt"], ex["completion"]))["input_ids"] + [tok.eos_token_id]
    assert enc.labels[:n_prompt] == [-100] * n_prompt
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    assert tok.decode(enc.labels[n_prompt:]) == " " + ex["completion"] + tok.eos_token


def test_lora_trains_adapters_only_in_memory(tiny_base, data_file):
    spec = _spec(tiny_base, data_file, "unused", max_steps=5)
    model, tok = load_model(spec, torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    enc = [encode_example(tok, r, spec.prompt_template) for r in load_examples(data_file)]
    fit(model, enc, spec, torch.device("cpu"), tok.eos_token_id)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    for n, p in model.named_parameters():
        if n in trainable:
            assert not torch.equal(p, before[n]), f"{n} did not train"
        else:
            assert torch.equal(p, before[n]), f"frozen {n} changed"


def test_lora_job_writes_adapter_and_merged_model_and_leaves_base_untouched(tiny_base, data_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_before = _folder_state(tiny_base)
    result = train(_spec(tiny_base, data_file, tmp_path / "run", max_steps=5))
    out = Path(result.output_dir)
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "manifest.json", "metrics.json", "model", "spec.json"]
    assert result.adapter_dir == str(out / "adapter") and result.model_dir == str(out / "model")
    assert all(torch.equal(v, base_before[k]) for k, v in _folder_state(tiny_base).items())

    # model/ is the adapter merged into the base: same outputs as base + adapter, without peft.
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir).eval()
    stacked = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), result.adapter_dir).eval()
    ids = AutoTokenizer.from_pretrained(result.model_dir)(world.format_example("is shipping free"), return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, stacked(**ids).logits, atol=1e-5, rtol=1e-5)
    merged_state = _folder_state(out / "model")
    qkv = "transformer.h.0.attn.c_attn.weight"  # a LoRA target: changed by the merge
    assert not torch.equal(merged_state[qkv], base_before[qkv])
    assert torch.equal(merged_state["transformer.wte.weight"], base_before["transformer.wte.weight"])

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 5 and [s for s, _ in metrics["loss_curve"]] == [1, 2, 3, 4, 5]
    assert metrics["trainable_params"] < metrics["total_params"]
    assert metrics["tokens_per_s"] > 0 and metrics["peak_rss_bytes"] > 0 and metrics["wall_seconds"] > 0


def test_full_finetune_changes_every_weight(tiny_base, data_file, tmp_path):
    base_before = _folder_state(tiny_base)
    result = train(_spec(tiny_base, data_file, tmp_path / "run", method="full", max_steps=2))
    after = _folder_state(Path(result.model_dir))
    assert result.adapter_dir is None and not (tmp_path / "run" / "adapter").exists()
    assert result.metrics["trainable_params"] == result.metrics["total_params"]
    unchanged = [k for k in base_before if k in after and torch.equal(after[k], base_before[k])]
    assert unchanged == []


def test_same_spec_and_seed_give_the_same_adapter(tiny_base, data_file, tmp_path):
    runs = [train(_spec(tiny_base, data_file, tmp_path / f"run{k}", lora_dropout=0.1, max_steps=4)) for k in range(2)]
    first, second = (load_file(str(Path(r.adapter_dir) / "adapter_model.safetensors")) for r in runs)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert runs[0].metrics["loss_curve"] == runs[1].metrics["loss_curve"]


def test_manifest_lists_exactly_the_trained_examples(tiny_base, tmp_path):
    rows = [{"id": f"s{k}", "prompt": f"where is my order {k}", "completion": "track it."} for k in range(6)]
    rows.append({"id": "long", "prompt": "where is my order " * 20, "completion": "track it."})
    data = write_jsonl(rows, tmp_path / "train.jsonl")
    result = train(_spec(tiny_base, data, tmp_path / "run", max_length=40, max_steps=1))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["hashes"] == sorted(example_hash(r) for r in rows[:6])
    assert manifest["ids"] == [f"s{k}" for k in range(6)] and manifest["n"] == 6
    assert result.metrics["dropped_too_long"] == 1


def test_crash_mid_training_leaves_no_output(tiny_base, data_file, tmp_path):
    def crash(step, total, loss):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_spec(tiny_base, data_file, tmp_path / "run"), progress=crash)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_qlora_without_gpu_says_what_is_missing(tiny_base, data_file, tmp_path):
    with pytest.raises(RuntimeError, match="^qlora needs bitsandbytes and a CUDA GPU: .*no CUDA GPU"):
        train(_spec(tiny_base, data_file, tmp_path / "run", method="qlora"))
    assert not (tmp_path / "run").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_lora_trains_on_gpu_and_reports_cuda_memory(tiny_base, data_file, tmp_path):
    result = train(_spec(tiny_base, data_file, tmp_path / "run", device="cuda", max_steps=3))
    assert result.metrics["device"].startswith("cuda") and result.metrics["peak_cuda_bytes"] > 0
    assert (Path(result.model_dir) / "model.safetensors").is_file()


# --- job CLI ----------------------------------------------------------------------------------


def test_job_cli_runs_a_spec_file_and_prints_the_result(tiny_base, data_file, tmp_path, capsys):
    spec = _spec(tiny_base, data_file, tmp_path / "run")
    spec.to_json(tmp_path / "spec.json")
    assert job.main([str(tmp_path / "spec.json"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "run")
    assert RetrainSpec.from_json(tmp_path / "run" / "spec.json") == spec
    # Running it again never overwrites the result.
    assert job.main([str(tmp_path / "spec.json"), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err


# What a bare GPU worker may lack. pandas is here too: transformers and peft only probe for it.
ORCHESTRATOR_STACK = ("pydantic", "sqlalchemy", "mlflow", "prefect", "driftloop", "pandas")


@pytest.mark.slow  # a whole job in a subprocess
def test_training_core_runs_without_the_orchestrator_stack(tiny_base, data_file, tmp_path):
    # A bare GPU worker has torch, transformers and peft only: a whole job must run with the rest
    # unimportable (whatever the machine has installed), and must not import them.
    _spec(tiny_base, data_file, tmp_path / "run").to_json(tmp_path / "spec.json")
    code = (
        "import sys\n"
        f"blocked = {ORCHESTRATOR_STACK!r}\n"
        "for name in blocked: sys.modules[name] = None  # import raises ImportError, find_spec gives None\n"
        "from retrain.job import main\n"
        "rc = main([sys.argv[1], '--quiet'])\n"
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in blocked and sys.modules[m] is not None))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "spec.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.stdout.strip().splitlines() == [str(tmp_path / "run"), "0 []"], proc.stderr[-2000:]
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_blocked_module_really_is_unimportable_in_the_child():
    # The control for the test above: the same blocking makes `import pydantic` fail.
    code = "import sys\nsys.modules['pydantic'] = None\nimport pydantic\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "import of pydantic halted; None in sys.modules" in proc.stderr


def test_job_cli_bad_spec_exits_2_with_one_line(tiny_base, tmp_path):
    missing = tmp_path / "missing.jsonl"
    data = {"base_model": str(tiny_base), "data_path": str(missing), "output_dir": str(tmp_path / "run")}
    (tmp_path / "spec.json").write_text(json.dumps(data))
    proc = subprocess.run(
        [sys.executable, "-m", "retrain.job", str(tmp_path / "spec.json")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"bad spec {tmp_path / 'spec.json'}: data_path: no data file at {missing}"
    ]
    assert not (tmp_path / "run").exists()


def test_job_refuses_data_changed_since_curation(tiny_base, tmp_path, capsys):
    examples, manifest = build_training_set(_items([("q1", "a1."), ("q2", "a2.")]), [], 0.0, seed=0)
    data = write_jsonl(examples, tmp_path / "train.jsonl")
    _spec(tiny_base, data, tmp_path / "run", data_digest=manifest["digest"]).to_json(tmp_path / "spec.json")
    with open(data, "a") as fh:
        fh.write(json.dumps({"id": "sneaked-in", "prompt": "q3", "completion": "a3."}) + "\n")
    assert job.main([str(tmp_path / "spec.json"), "--quiet"]) == 2
    assert "do not match the spec's data_digest" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_job_cli_diverged_training_exits_1_and_leaves_nothing(tiny_base, data_file, tmp_path, capsys):
    _spec(tiny_base, data_file, tmp_path / "run", method="full", learning_rate=1e30).to_json(tmp_path / "spec.json")
    assert job.main([str(tmp_path / "spec.json"), "--quiet"]) == 1
    assert capsys.readouterr().err.startswith("training failed: FloatingPointError: loss is nan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json", "train.jsonl"]


# --- curation ---------------------------------------------------------------------------------


def _items(pairs):
    return [{"item_id": f"i{k:03d}", "prompt": q, "answer": a} for k, (q, a) in enumerate(pairs)]


def test_curation_dedupes_filters_and_mixes_replay_to_the_fraction():
    pairs = [
        ("Where is my  ORDER", "track it."),
        ("where is my order", "track it."),  # same after normalising
        ("where is my order", "call us."),
        ("x" * 50, "y" * 60),
        ("", "empty prompt"),
    ]
    pairs += [(f"question {k}", "answer.") for k in range(7)]
    replay = [{"id": f"r{k:03d}", "prompt": f"old question {k}", "completion": "old answer."} for k in range(100)]
    replay.append({"id": "r-dup", "prompt": "question 1", "completion": "answer."})  # same as a new item
    examples, manifest = build_training_set(_items(pairs), replay, replay_fraction=0.5, seed=3, max_chars=100)
    assert manifest["counts"] == {"train": 9, "replay": 9, "dropped_duplicates": 1, "dropped_length": 2}
    assert manifest["replay_fraction"] == 0.5
    assert [e["id"] for e in examples[:9]] == ["i000", "i002"] + [f"i{k:03d}" for k in range(5, 12)]
    assert all(e["id"].startswith("r") and e["id"] != "r-dup" for e in examples[9:])
    assert manifest["hashes"] == sorted(example_hash(e) for e in examples)
    again, _ = build_training_set(list(reversed(_items(pairs))), list(reversed(replay)), 0.5, seed=3, max_chars=100)
    assert again == examples
    other, _ = build_training_set(_items(pairs), replay, 0.5, seed=4, max_chars=100)
    assert other[9:] != examples[9:]


def test_replay_fraction_is_capped_by_the_pool_and_zero_means_none():
    items = _items([(f"q{k}", "a.") for k in range(10)])
    replay = [{"id": f"r{k}", "prompt": f"old {k}", "completion": "b."} for k in range(4)]
    _, capped = build_training_set(items, replay, replay_fraction=0.8, seed=0)
    assert capped["counts"]["replay"] == 4 and capped["replay_fraction"] == round(4 / 14, 4)
    none, manifest = build_training_set(items, replay, replay_fraction=0.0, seed=0)
    assert len(none) == 10 and manifest["counts"]["replay"] == 0


def test_curated_jsonl_is_what_the_trainer_reads(tmp_path):
    examples, _ = build_training_set(_items([("q1", "a1."), ("q2", "a2.")]), [], 0.5, seed=0)
    assert load_examples(write_jsonl(examples, tmp_path / "t.jsonl")) == examples
    assert load_replay(tmp_path) == []


def test_replay_pool_carries_forward_bounded_and_newest_wins(tmp_path):
    old = [{"id": f"r{k:02d}", "prompt": f"old {k}", "completion": "b."} for k in range(10)]
    new = [
        {"id": "r00", "prompt": "old 0", "completion": "corrected."},
        {"id": "n1", "prompt": "new", "completion": "c."},
    ]
    assert carry_replay(tmp_path, old, new, seed=0) == 11
    rows = {r["id"]: r for r in load_replay(tmp_path)}
    assert sorted(rows) == ["n1"] + [f"r{k:02d}" for k in range(10)] and rows["r00"]["completion"] == "corrected."
    assert carry_replay(tmp_path, old, new, seed=0, keep=4) == 4 and len(load_replay(tmp_path)) == 4


# --- the real demo model (conftest's `demo_model`): LoRA teaches the new topic ----------------


def test_demo_model_ships_a_replay_pool(demo_model):
    assert json.loads((demo_model / "driftloop_build.json").read_text())["steps"] >= 150  # min_steps
    rows = load_replay(demo_model)
    assert len(rows) == 1000 and len({r["id"] for r in rows}) == 1000
    assert {r["completion"] for r in rows} <= set(world.all_answers(world.BASE_TOPICS))


def _billing(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        intent = rng.choice(list(world.INTENTS["billing"]))
        out.append((world.make_question(rng, "billing", intent), world.answer_for("billing", intent)))
    return out


@torch.no_grad()
def _accuracy(model_dir, items, choices) -> float:
    """Multiple choice by summed log-likelihood of " " + choice after the prompt (lm-eval style)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    right = 0
    for prompt, gold in items:
        n_ctx = len(tok(world.format_example(prompt))["input_ids"])
        enc = tok([world.format_example(prompt, c) for c in choices], padding=True, return_tensors="pt")
        logp = model(**enc).logits[:, :-1].log_softmax(-1).gather(-1, enc["input_ids"][:, 1:, None])[..., 0]
        mask = enc["attention_mask"][:, 1:].clone()
        mask[:, : n_ctx - 1] = 0  # score the answer tokens only
        right += choices[int((logp * mask).sum(1).argmax())] == gold
    return right / len(items)


@pytest.mark.slow
def test_lora_teaches_held_out_billing_and_keeps_base_topics(demo_model, tmp_path):
    train_pairs = _billing(150, seed=1)
    seen = {q for q, _ in train_pairs}
    held_out = [p for p in _billing(120, seed=99) if p[0] not in seen][:40]
    rng = random.Random(7)
    base_items = []
    for _ in range(40):
        topic = rng.choice(world.BASE_TOPICS)
        intent = rng.choice(list(world.INTENTS[topic]))
        base_items.append((world.make_question(rng, topic, intent), world.answer_for(topic, intent)))
    choices = world.all_answers()  # all 16 answers: 4 billing + 12 base-topic

    examples, manifest = build_training_set(_items(train_pairs), load_replay(demo_model), 0.5, seed=0)
    assert manifest["replay_fraction"] == 0.5
    write_jsonl(examples, tmp_path / "train.jsonl")
    spec = RetrainSpec(
        base_model=str(demo_model),
        data_path=str(tmp_path / "train.jsonl"),
        output_dir=str(tmp_path / "run"),
        device="cpu",  # the recommended defaults
        data_digest=manifest["digest"],
    )
    result = train(spec)
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["digest"] == manifest["digest"]

    assert _accuracy(demo_model, held_out, choices) <= 0.1  # the base model does not know billing
    assert _accuracy(result.model_dir, held_out, choices) >= 0.9
    assert _accuracy(result.model_dir, base_items, choices) >= 0.95
