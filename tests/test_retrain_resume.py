"""Resilience and scale-out of the fine-tuning job: a job killed with SIGKILL mid-training
resumes from its last checkpoint and ends as if never interrupted (SFT with LoRA; DPO with full
fine-tuning, whose reference log-probs come back from the checkpoint); a checkpoint left by
another spec is refused; out of memory is a one-line failure with exit 1 and no result
folder; the same job under `torchrun` with two processes makes the single process's updates
(SFT, KTO and SFT + DPO)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from retrain import job
from retrain.spec import RetrainSpec
from retrain.trainer import train

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def tiny_base(make_tiny_gpt2) -> Path:
    # No dropout: a resumed run must match an uninterrupted one exactly.
    return make_tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def _spec(base, data, out, **kw) -> RetrainSpec:
    # lora_dropout > 0: the resumed run must also restore the RNG to match the uninterrupted one.
    kw = {"batch_size": 4, "device": "cpu", "learning_rate": 1e-3, "lora_dropout": 0.1, **kw}
    return RetrainSpec(base_model=str(base), data_path=str(data), output_dir=str(out), **kw)


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _kill_at_first_checkpoint(spec_file: Path, state: Path) -> int:
    # Run the job in a child process, SIGKILL it once a checkpoint exists; the step it holds.
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrain.job", str(spec_file), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the job ended before it could be killed"
    return torch.load(state, weights_only=True)["state"]["step"]


@pytest.mark.slow  # trains in a subprocess, killed and resumed
def test_sigkilled_job_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tiny_base, data_file, tmp_path):
    spec = _spec(tiny_base, data_file, tmp_path / "run", max_steps=300, epochs=60.0, checkpoint_every=10)
    spec.to_json(tmp_path / "spec.json")
    killed_at = _kill_at_first_checkpoint(tmp_path / "spec.json", tmp_path / "run.checkpoint" / "state.pt")
    assert not (tmp_path / "run").exists()  # no half-written result
    assert 10 <= killed_at < 300 and killed_at % 10 == 0

    assert job.main([str(tmp_path / "spec.json"), "--quiet"]) == 0  # the same command again resumes
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 300 and metrics["resumed_from_step"] >= killed_at
    assert [s for s, _ in metrics["loss_curve"]] == list(range(1, 301))
    assert not (tmp_path / "run.checkpoint").exists()  # cleaned up once the result is whole

    whole = train(_spec(tiny_base, data_file, tmp_path / "whole", max_steps=300, epochs=60.0))
    assert metrics["loss_curve"] == whole.metrics["loss_curve"]
    resumed, straight = _adapter(tmp_path / "run"), _adapter(Path(whole.output_dir))
    assert resumed.keys() == straight.keys()
    for k in resumed:
        torch.testing.assert_close(resumed[k], straight[k], atol=1e-6, rtol=1e-5)


@pytest.mark.slow  # trains in a subprocess, killed and resumed
def test_sigkilled_dpo_job_resumes_to_the_same_result(tiny_base, tmp_path):
    # Full fine-tuning: the reference log-probs are taken once from the weights as loaded, so a
    # resumed job must read them from the checkpoint (recomputed from trained weights they would differ).
    from driftloop.demo import world
    from retrain.curate import write_jsonl

    corpus = world.training_corpus(16, seed=3, topics=list(world.INTENTS))
    rows = [
        {
            "id": f"p{k}",
            "prompt": q,
            "chosen": a,
            "rejected": next(b for _, b in corpus[k + 1 :] + corpus[:k] if b != a),
        }
        for k, (q, a) in enumerate(corpus)
    ]
    data = write_jsonl(rows, tmp_path / "pairs.jsonl")
    kw = {"objective": "dpo", "method": "full", "max_steps": 200, "epochs": 60.0, "lora_dropout": 0.0}
    _spec(tiny_base, data, tmp_path / "run", checkpoint_every=10, **kw).to_json(tmp_path / "spec.json")
    state = tmp_path / "run.checkpoint" / "state.pt"
    killed_at = _kill_at_first_checkpoint(tmp_path / "spec.json", state)
    assert not (tmp_path / "run").exists() and 10 <= killed_at < 200 and killed_at % 10 == 0
    saved = torch.load(state, weights_only=True)["state"]["reference"]
    assert saved["chosen"].shape == saved["rejected"].shape == (16,)

    assert job.main([str(tmp_path / "spec.json"), "--quiet"]) == 0  # the same command again resumes
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["objective"] == "dpo" and metrics["steps"] == 200 and metrics["resumed_from_step"] >= killed_at
    assert [s for s, _ in metrics["loss_curve"]] == list(range(1, 201))

    whole = train(_spec(tiny_base, data, tmp_path / "whole", **kw))
    assert metrics["loss_curve"] == whole.metrics["loss_curve"]
    for key in ("reward_margin", "reward_accuracy", "rewards_chosen", "rewards_rejected"):
        assert metrics[key] == whole.metrics[key]
    resumed, straight = (
        load_file(str(p / "model" / "model.safetensors")) for p in (tmp_path / "run", Path(whole.output_dir))
    )
    assert resumed.keys() == straight.keys()
    for k in resumed:
        torch.testing.assert_close(resumed[k], straight[k], atol=1e-6, rtol=1e-5)


def test_checkpoint_of_another_spec_is_refused_with_exit_2(tiny_base, data_file, tmp_path, capsys):
    def stop(step, total, loss):
        if step == 7:
            raise KeyboardInterrupt  # stands in for a crash after the checkpoint at step 5

    with pytest.raises(KeyboardInterrupt):
        train(_spec(tiny_base, data_file, tmp_path / "run", max_steps=20, checkpoint_every=5), progress=stop)
    assert (tmp_path / "run.checkpoint" / "state.pt").is_file() and not (tmp_path / "run").exists()

    _spec(tiny_base, data_file, tmp_path / "run", max_steps=20, checkpoint_every=5, learning_rate=5e-3).to_json(
        tmp_path / "spec.json"
    )
    capsys.readouterr()  # what the first run wrote (a weight-loading bar, where progress bars are on)
    assert job.main([str(tmp_path / "spec.json"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"bad input: checkpoint: {tmp_path / 'run.checkpoint'} belongs to a different spec; delete it to start over"
    )
    assert not (tmp_path / "run").exists()


def test_out_of_memory_is_one_line_exit_1(tiny_base, data_file, tmp_path, capsys, monkeypatch):
    import retrain.trainer

    def oom(spec, progress=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.27 GiB.\nmore detail")

    monkeypatch.setattr(retrain.trainer, "train", oom)  # a real OOM needs a GPU; this is the job's handling
    _spec(tiny_base, data_file, tmp_path / "run").to_json(tmp_path / "spec.json")
    assert job.main([str(tmp_path / "spec.json"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "training failed: out of memory (CUDA out of memory. Tried to allocate 9.27 GiB.); "
        "lower batch_size or max_length, or use qlora"
    ]


@pytest.mark.slow  # trains under torchrun, two processes
def test_torchrun_two_processes_train_like_one(tiny_base, data_file, tmp_path):
    # batch 5 over 2 processes: shares of 3 and 2 examples, weighted by their target tokens.
    kw = {"method": "full", "batch_size": 5, "max_steps": 4, "lora_dropout": 0.0}
    single = train(_spec(tiny_base, data_file, tmp_path / "one", **kw))
    _spec(tiny_base, data_file, tmp_path / "two", **kw).to_json(tmp_path / "spec.json")
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "retrain.job",
            str(tmp_path / "spec.json"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines() == [str(tmp_path / "two")]  # rank 0 alone reports
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["tokens"] == single.metrics["tokens"]
    for (_, a), (_, b) in zip(metrics["loss_curve"], single.metrics["loss_curve"]):
        assert abs(a - b) < 1e-5
    two, one = (load_file(str(p / "model" / "model.safetensors")) for p in (tmp_path / "two", tmp_path / "one"))
    worst = max(float((two[k] - one[k]).abs().max()) for k in one)
    assert worst < 1e-4, worst


@pytest.mark.slow  # trains under torchrun, two processes
@pytest.mark.parametrize("objective", ["kto", "mixed"])
def test_torchrun_two_processes_train_a_preference_objective_like_one(tiny_base, tmp_path, objective):
    # Shares of 3 and 2 examples: KTO's KL reference point is the mean over the whole step, and
    # mixed normalises its SFT part by the step's SFT tokens and its DPO part by its pairs.
    from driftloop.demo import world
    from retrain.curate import write_jsonl

    corpus = world.training_corpus(24, seed=5, topics=list(world.INTENTS))
    rows = []
    for k, (q, a) in enumerate(corpus):
        other = next(b for _, b in corpus[k + 1 :] + corpus[:k] if b != a)
        rows.append(
            [
                {"id": f"s{k}", "prompt": q, "completion": a},
                {"id": f"p{k}", "prompt": q, "chosen": a, "rejected": other},
                {"id": f"k{k}", "prompt": q, "completion": a if k % 2 else other, "label": bool(k % 2)},
            ][k % 3]
        )
    data = write_jsonl(rows, tmp_path / "t.jsonl")
    kw = {"objective": objective, "method": "full", "batch_size": 5, "max_steps": 4, "lora_dropout": 0.0}
    single = train(_spec(tiny_base, data, tmp_path / "one", **kw))
    _spec(tiny_base, data, tmp_path / "two", **kw).to_json(tmp_path / "spec.json")
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "retrain.job",
            str(tmp_path / "spec.json"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["objective"] == objective
    assert metrics["tokens"] == single.metrics["tokens"]
    for (_, a), (_, b) in zip(metrics["loss_curve"], single.metrics["loss_curve"]):
        assert abs(a - b) < 1e-5
    two, one = (load_file(str(p / "model" / "model.safetensors")) for p in (tmp_path / "two", tmp_path / "one"))
    worst = max(float((two[k] - one[k]).abs().max()) for k in one)
    assert worst < 1e-4, worst
