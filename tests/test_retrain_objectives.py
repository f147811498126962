"""The preference objectives of the fine-tuning job: DPO, KTO and SFT + DPO.

Correct by construction: on a tiny random GPT-2 on CPU, for the same batch, each
loss and its gradients with respect to every trainable parameter equal those of
TRL's own trainers (DPOTrainer, KTOTrainer: their `compute_loss` on a batch from
their own data collator, after their own tokenisation, which must give our
tokens) to 1e-5; for LoRA the reference is the base with adapters off, for full
fine-tuning a separate copy on TRL's side and log-probs taken before the first
update on ours. Those tests skip where TRL (a dev extra) is not installed.

Then: the settings' range checks, the data rules (row kinds, identical pairs,
an objective the data cannot feed: one line, exit 2), `auto`, and each objective
training end to end through `train(spec)` into a result folder like SFT's.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from driftloop.demo import world
from retrain import job
from retrain.curate import write_jsonl
from retrain.data import DataError, load_examples, row_hash, rows_digest
from retrain.loss import sequence_logps
from retrain.objectives import Objective, scorer, without_dropout
from retrain.params import TrainingParams, kto_weights
from retrain.preference import Rated, build_units, resolve_objective
from retrain.spec import RetrainSpec, dataset_digest, example_hash
from retrain.trainer import load_model, train

CPU = torch.device("cpu")
TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def tiny_base(make_tiny_gpt2) -> Path:
    # No dropout in the base: TRL turns dropout off for DPO and KTO, and so do we.
    return make_tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def _corpus(n: int, seed: int = 5) -> list[tuple[str, str, str]]:
    """(prompt, answer, another topic's answer) from the demo world."""
    pairs = world.training_corpus(max(n, 8), seed=seed, topics=list(world.INTENTS))
    return [(q, a, next(b for _, b in pairs[k + 1 :] + pairs[:k] if b != a)) for k, (q, a) in enumerate(pairs)][:n]


def pair_rows(n: int = 4) -> list[dict]:
    return [{"id": f"p{k}", "prompt": q, "chosen": a, "rejected": b} for k, (q, a, b) in enumerate(_corpus(n))]


def rated_rows(n: int = 6) -> list[dict]:
    # Mostly thumbs up, so the class weights matter: 4 up, 2 down.
    return [
        {"id": f"k{k}", "prompt": q, "completion": a if k % 3 else b, "label": bool(k % 3)}
        for k, (q, a, b) in enumerate(_corpus(n, seed=7))
    ]


def sft_rows(n: int = 4) -> list[dict]:
    return [{"id": f"s{k}", "prompt": q, "completion": a} for k, (q, a, _) in enumerate(_corpus(n, seed=9))]


def _spec(base, data="unused.jsonl", out="unused", **kw) -> RetrainSpec:
    kw = {"device": "cpu", "batch_size": 4, "beta": 0.2, "loss_chunk_tokens": 16, **kw}
    return RetrainSpec(base_model=str(base), data_path=str(data), output_dir=str(out), **kw)


# --- equal to TRL -----------------------------------------------------------------------------


def _trl():
    return pytest.importorskip(
        "trl",
        reason="trl (the dev extra) is not installed: nothing to compare the objectives with; pip install -e '.[dev]'",
    )


def _perturb(model, names: str | None, scale: float, seed: int = 1) -> None:
    # Move the policy away from the reference, so that log-ratios (and the KL term) are not 0.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and (names is None or names in n):
                p.add_(torch.randn(p.shape, generator=g) * scale)


def _ours(spec, rows, objective, take=None, seed=1):
    """Our model (policy moved off the reference, at random from `seed`), its units, and the
    loss + gradients of the first `take` units (all by default)."""
    model, tok = load_model(spec, CPU)
    units, _ = build_units(tok, rows, objective, spec)
    obj = Objective(objective, spec, units)
    score = scorer(model, spec)
    reference_model = None
    if spec.method == "full":
        obj.start(model, score, tok.pad_token_id, CPU)  # before any update: the weights as loaded
        reference_model = copy.deepcopy(model)
        _perturb(model, None, 0.02, seed)
    else:
        _perturb(model, "lora_B", 0.1, seed)
        obj.start(model, score, tok.pad_token_id, CPU)  # adapters off: the base
    model.train()
    with without_dropout(model):
        loss, _, _ = obj.loss(units[:take] if take else units, score, tok.pad_token_id, CPU)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return model, tok, units, obj, reference_model, loss.detach(), grads


def _trl_model(spec, model, reference_model):
    """TRL's model arguments for the same policy: for LoRA the base plus our adapter config (TRL
    adds the adapter, its reference is the base with adapters off), our adapter values copied
    in after; for full fine-tuning a copy of our policy and of our reference."""
    if spec.method == "full":
        return {"model": copy.deepcopy(model), "ref_model": reference_model}
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(spec.base_model, dtype=torch.float32)
    return {"model": base, "peft_config": copy.deepcopy(model.peft_config["default"])}


def _copy_trainable(src, dst) -> None:
    mine = dict(src.named_parameters())
    with torch.no_grad():
        for n, p in dst.named_parameters():
            if p.requires_grad:
                p.copy_(mine[n])


def _compare(tr, batch, loss, grads) -> tuple[float, float]:
    tr.model.train()
    theirs = tr.compute_loss(tr.model, batch)
    theirs.backward()
    their_grads = {n: p.grad for n, p in tr.model.named_parameters() if p.requires_grad}
    assert their_grads.keys() == grads.keys()
    loss_diff = abs(float(theirs) - float(loss))
    grad_diff = max(float((their_grads[n] - grads[n]).abs().max()) for n in grads)
    assert loss_diff <= TOL and grad_diff <= TOL, (float(loss), float(theirs), loss_diff, grad_diff)
    assert max(float(g.abs().max()) for g in grads.values()) > 100 * TOL  # gradients worth comparing
    return loss_diff, grad_diff


def _text(spec, row: dict, key: str) -> dict:
    # TRL's text format for the same tokens: the template's prompt, then " " + completion (TRL adds eos).
    return {"prompt": spec.prompt_template.replace("{prompt}", row["prompt"]), key: " " + row[key]}


@pytest.mark.parametrize("method, chunked", [("lora", True), ("lora", False), ("full", True)])
def test_dpo_loss_and_gradients_equal_trl(tiny_base, tmp_path, method, chunked):
    _trl()
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    spec = _spec(tiny_base, objective="dpo", method=method, chunked_loss=chunked)
    rows = pair_rows(4)
    model, tok, units, _, ref_model, loss, grads = _ours(spec, rows, "dpo")
    data = Dataset.from_list([{**_text(spec, r, "chosen"), "rejected": " " + r["rejected"]} for r in rows])
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=spec.beta,
        per_device_train_batch_size=4,
        max_length=None,
        report_to=[],
        use_cpu=True,
        bf16=False,
    )
    tr = DPOTrainer(args=args, train_dataset=data, processing_class=tok, **_trl_model(spec, model, ref_model))
    if method != "full":
        _copy_trainable(model, tr.model)
    examples = [tr.train_dataset[i] for i in range(len(rows))]
    for u, e in zip(units, examples):  # TRL's tokenisation gives our tokens
        assert e["prompt_ids"] + e["chosen_ids"] == u.chosen.input_ids
        assert e["prompt_ids"] + e["rejected_ids"] == u.rejected.input_ids
    _compare(tr, tr.data_collator(examples), loss, grads)


# Seed 2 moves the policy so that the batch's KL estimate is > 0 (KTO's reference point in play);
# seed 1 makes it < 0, clamped to 0.
@pytest.mark.parametrize("method, seed", [("lora", 2), ("lora", 1), ("full", 2)])
def test_kto_loss_and_gradients_equal_trl(tiny_base, tmp_path, method, seed):
    _trl()
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    # Class weights off 1 (4 up, 2 down: kto_weights gives 1 and 2); the first batch of 4 has both classes.
    dw, uw = kto_weights(4, 2)
    spec = _spec(tiny_base, objective="kto", method=method, kto_desirable_weight=dw, kto_undesirable_weight=uw)
    rows = rated_rows(6)
    model, tok, units, obj, ref_model, loss, grads = _ours(spec, rows, "kto", take=4, seed=seed)
    data = Dataset.from_list([{**_text(spec, r, "completion"), "label": r["label"]} for r in rows])
    args = KTOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=spec.beta,
        desirable_weight=dw,
        undesirable_weight=uw,
        per_device_train_batch_size=4,
        max_length=None,
        report_to=[],
        use_cpu=True,
        bf16=False,
    )
    tr = KTOTrainer(args=args, train_dataset=data, processing_class=tok, **_trl_model(spec, model, ref_model))
    if method != "full":
        _copy_trainable(model, tr.model)
    examples = [tr.train_dataset[i] for i in range(len(rows))]
    for u, e in zip(units, examples):  # our tokens, and TRL's mismatched KL pairs (rotation by one per batch)
        assert isinstance(u, Rated) and u.desirable == e["label"]
        assert e["prompt_ids"] + e["completion_ids"] == u.completion.input_ids
        assert e["prompt_ids"] + e["KL_completion_ids"] == u.kl.input_ids
    with torch.no_grad():
        policy_kl = scorer(model, spec)(_collate([u.kl for u in units[:4]], tok))
    assert (float((policy_kl - obj.reference["kl"][:4]).mean()) > 0) == (seed == 2)
    _compare(tr, tr.data_collator(examples[:4]), loss, grads)


def test_mixed_loss_and_gradients_equal_trl_dpo_plus_sft(tiny_base, tmp_path):
    # mixed = DPO on the pairs + sft_weight x SFT on the corrections; with the corrections being the
    # pairs' chosen sides this is TRL's DPOTrainer with loss_type ["sigmoid", "sft"].
    _trl()
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    spec = _spec(tiny_base, objective="mixed", sft_weight=0.5)
    pairs = pair_rows(4)
    rows = [r for p in pairs for r in ({"id": "s" + p["id"], "prompt": p["prompt"], "completion": p["chosen"]}, p)]
    model, tok, units, _, ref_model, loss, grads = _ours(spec, rows, "mixed")
    assert [type(u).__name__ for u in units] == ["Encoded", "Pair"] * 4
    data = Dataset.from_list([{**_text(spec, r, "chosen"), "rejected": " " + r["rejected"]} for r in pairs])
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=spec.beta,
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, spec.sft_weight],
        per_device_train_batch_size=4,
        max_length=None,
        report_to=[],
        use_cpu=True,
        bf16=False,
    )
    tr = DPOTrainer(args=args, train_dataset=data, processing_class=tok, **_trl_model(spec, model, ref_model))
    _copy_trainable(model, tr.model)
    _compare(tr, tr.data_collator([tr.train_dataset[i] for i in range(4)]), loss, grads)


def _collate(seqs, tok):
    from retrain.packing import collate_padded

    return collate_padded(seqs, tok.pad_token_id, CPU, with_targets=True)


def test_chunked_log_probs_match_the_full_logits_with_a_trained_head(tiny_base):
    # Full fine-tuning trains the (tied) output head: its gradient is recomputed chunk by chunk.
    # Variants: chunked over the completion positions only (what the job runs), chunked over every
    # position, and the full logits.
    spec = _spec(tiny_base, method="full", objective="dpo")
    grads, values = [], []
    for chunked, compact in [(True, True), (True, False), (False, False)]:
        model, tok = load_model(spec, CPU)
        units, _ = build_units(tok, pair_rows(4), "dpo", spec)
        batch = _collate([u.chosen for u in units] + [u.rejected for u in units], tok)
        logps = sequence_logps(
            model,
            batch.input_ids,
            batch.labels,
            batch.attention_mask,
            chunked=chunked,
            chunk_tokens=7,
            targets=batch.targets if compact else None,
        )
        (logps * torch.linspace(-1, 2, len(logps))).sum().backward()
        values.append(logps.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for other in (1, 2):
        torch.testing.assert_close(values[0], values[other], atol=1e-5, rtol=0)
        for n in grads[0]:
            torch.testing.assert_close(grads[0][n], grads[other][n], atol=1e-5, rtol=0)


# --- settings and data ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"beta": 0}, "beta: must be > 0, got 0"),
        ({"beta": -0.1}, "beta: must be > 0, got -0.1"),
        ({"kto_desirable_weight": 0.0}, "kto_desirable_weight: must be > 0, got 0.0"),
        ({"kto_undesirable_weight": -1.0}, "kto_undesirable_weight: must be > 0, got -1.0"),
        ({"sft_weight": 0.0}, "sft_weight: must be > 0, got 0.0"),
        ({"objective": "ppo"}, "objective: must be one of auto, sft, dpo, kto, mixed, got 'ppo'"),
    ],
)
def test_bad_objective_settings_name_the_field(change, message):
    with pytest.raises(ValueError) as err:
        TrainingParams(**change).check()
    assert str(err.value) == message


def test_kto_weights_balance_the_classes_in_trls_range():
    for up, down in [(300, 100), (50, 200), (7, 7), (1, 40)]:
        dw, uw = kto_weights(up, down)
        ratio = dw * up / (uw * down)  # TRL's recommended range for the weighted class balance
        assert ratio >= 1 and ratio <= 4 / 3 and min(dw, uw) == 1.0
    assert kto_weights(0, 5) == (1.0, 1.0)


def test_rows_of_each_kind_are_read_and_hashed(tmp_path):
    rows = sft_rows(2) + pair_rows(2) + rated_rows(2)
    back = load_examples(write_jsonl(rows, tmp_path / "t.jsonl"))
    assert back == rows
    # A correction hashes as before (curation's manifests stay valid); every row hash differs.
    assert [row_hash(r) for r in rows[:2]] == [example_hash(r) for r in rows[:2]]
    assert rows_digest(rows[:2]) == dataset_digest(rows[:2])
    assert len({row_hash(r) for r in rows}) == len(rows)
    flipped = [{**r, "label": not r["label"]} if "label" in r else r for r in rows]
    assert rows_digest(flipped) != rows_digest(rows)


@pytest.mark.parametrize(
    "row, message",
    [
        (
            {"id": "p", "prompt": "q", "chosen": "same.", "rejected": "same."},
            "pair 'p' has identical chosen and rejected",
        ),
        ({"id": "p", "prompt": "q", "chosen": "a."}, "a pair needs string fields id, prompt, chosen, rejected"),
        (
            {"id": "k", "prompt": "q", "completion": "a.", "label": "up"},
            "a rated row needs string fields id, prompt, completion and a true/false label",
        ),
    ],
)
def test_bad_preference_row_is_a_data_error_naming_its_line(tmp_path, row, message):
    path = write_jsonl(sft_rows(1) + [row], tmp_path / "t.jsonl")
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert str(err.value) == f"{path}:2: {message}"


@pytest.mark.parametrize(
    "kinds, expected",
    [
        (("sft",), "sft"),
        (("pair",), "dpo"),
        (("sft", "pair"), "mixed"),
        (("kto",), "kto"),
        (("sft", "kto"), "kto"),
        (("pair", "kto"), "dpo"),
        (("sft", "pair", "kto"), "mixed"),
    ],
)
def test_auto_picks_the_objective_the_data_feeds(kinds, expected):
    make = {"sft": sft_rows, "pair": pair_rows, "kto": rated_rows}
    assert resolve_objective("auto", [r for k in kinds for r in make[k](2)]) == expected


@pytest.mark.parametrize(
    "objective, rows, message",
    [
        ("dpo", sft_rows(3), "dpo: 0 pairs in the training data"),
        ("kto", pair_rows(3), "kto: 0 rated rows (with a true/false label) in the training data"),
        ("mixed", pair_rows(3), "mixed: 0 corrections (rows with a completion and no label) in the training data"),
        ("sft", rated_rows(3), "sft: 0 corrections (rows with a completion and no label) in the training data"),
    ],
)
def test_objective_the_data_cannot_feed_is_one_line_and_exit_2(tiny_base, tmp_path, capsys, objective, rows, message):
    data = write_jsonl(rows, tmp_path / "train.jsonl")
    _spec(tiny_base, data, tmp_path / "run", objective=objective).to_json(tmp_path / "spec.json")
    assert job.main([str(tmp_path / "spec.json"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"bad input: {message}"]
    assert not (tmp_path / "run").exists()


def test_identical_pair_fails_the_job_with_its_id(tiny_base, tmp_path, capsys):
    rows = pair_rows(3) + [{"id": "same", "prompt": "q", "chosen": "ok.", "rejected": "ok."}]
    data = write_jsonl(rows, tmp_path / "train.jsonl")
    _spec(tiny_base, data, tmp_path / "run", objective="dpo").to_json(tmp_path / "spec.json")
    assert job.main([str(tmp_path / "spec.json"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"bad input: {data}:4: pair 'same' has identical chosen and rejected"


def test_kl_sequences_rotate_completions_within_each_batch(tiny_base):
    spec = _spec(tiny_base, objective="kto", batch_size=4)
    _, tok = load_model(spec, CPU)
    units, _ = build_units(tok, rated_rows(6), "kto", spec)

    def split(e):  # (prompt ids, completion ids)
        n = e.labels.count(-100)
        return e.input_ids[:n], e.input_ids[n:]

    kl_from = []
    for u in units:
        prompt, tail = split(u.kl)
        assert prompt == split(u.completion)[0]  # the example's own prompt, another one's completion:
        kl_from.append([v.example["id"] for v in units if split(v.completion)[1] == tail])
    # Groups [k0..k3], [k4, k5] in data order: each takes the previous one's completion, the first the group's last.
    assert [u.example["id"] for u in units] == [f"k{k}" for k in range(6)]
    assert all(expected in found for expected, found in zip(["k3", "k0", "k1", "k2", "k5", "k4"], kl_from))


# --- end to end -------------------------------------------------------------------------------


@pytest.fixture
def mixed_file(tmp_path) -> Path:
    return write_jsonl(sft_rows(6) + pair_rows(8) + rated_rows(6), tmp_path / "train.jsonl")


@pytest.mark.parametrize(
    "objective, method",
    [("sft", "lora"), ("dpo", "lora"), ("kto", "lora"), ("mixed", "lora"), ("dpo", "full"), ("auto", "lora")],
)
def test_each_objective_trains_into_a_result_folder(tiny_base, mixed_file, tmp_path, objective, method):
    spec = _spec(
        tiny_base,
        mixed_file,
        tmp_path / "run",
        objective=objective,
        method=method,
        max_steps=12,
        learning_rate=1e-2,
        data_digest=rows_digest(load_examples(mixed_file)),
    )
    result = train(spec)
    out = Path(result.output_dir)
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "adapter").is_dir() == (method != "full")
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    resolved = "mixed" if objective == "auto" else objective
    assert metrics["objective"] == manifest["objective"] == resolved and metrics["objective_requested"] == objective
    expected = {
        "sft": {"sft": 6},
        "dpo": {"pairs": 8},
        "kto": {"desirable": 4, "undesirable": 2},
        "mixed": {"sft": 6, "pairs": 8},
    }[resolved]
    assert {k: n for k, n in metrics["counts"].items() if n} == expected
    assert (
        metrics["unused_rows"]
        == {
            "sft": {"pair": 8, "kto": 6},
            "dpo": {"sft": 6, "kto": 6},
            "kto": {"sft": 6, "pair": 8},
            "mixed": {"kto": 6},
        }[resolved]
    )
    assert manifest["n"] == metrics["examples"] == sum(expected.values())
    assert metrics["steps"] == 12 and len(metrics["loss_curve"]) == 12
    first, last = metrics["loss_curve"][0][1], metrics["final_loss"]
    if resolved in ("dpo", "kto"):
        # Policy = reference at step 1: DPO's loss is log 2, KTO's 1 - sigmoid(0) = 0.5 per example.
        assert first == pytest.approx({"dpo": 0.69315, "kto": 0.5}[resolved], abs=1e-5)
    assert last < first
    if resolved in ("dpo", "mixed"):
        assert metrics["reward_margin"] > 0 and 0.5 < metrics["reward_accuracy"] <= 1.0
    if resolved == "kto":
        assert metrics["rewards_desirable"] > metrics["rewards_undesirable"] and metrics["kl"] >= 0
    assert metrics["packing"] is False or resolved == "sft"


def test_preference_objectives_train_without_dropout(make_tiny_gpt2, tmp_path):
    # A base with GPT-2's default dropout (0.1) and LoRA dropout: the first DPO step still starts
    # exactly at log 2 (policy = reference), which dropout would break; the model gets its dropout back.
    base = make_tiny_gpt2()
    spec = _spec(
        base,
        write_jsonl(pair_rows(8), tmp_path / "t.jsonl"),
        tmp_path / "run",
        objective="dpo",
        lora_dropout=0.1,
        max_steps=2,
    )
    model, _ = load_model(spec, CPU)
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert min(drops) == 0.1
    with without_dropout(model):
        assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == drops
    metrics = train(spec).metrics
    assert metrics["loss_curve"][0] == [1, 0.69315]
