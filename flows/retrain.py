"""`retrain` flow: curate the training pool, fine-tune, register the candidate as `challenger`.

The training core (`retrain.trainer`) needs only torch, transformers and peft;
this flow does the store reads, the MLflow logging and the registration.
A failed job leaves no result folder and never touches the `champion` alias;
its error is tagged `driftloop.error` on the FAILED `retrain` run in MLflow.

    >>> res = retrain(StageParams(config="driftloop.yaml"))
    >>> res.version
    '2'
"""

from __future__ import annotations

import random
import shutil
import uuid

from prefect import flow, task
from pydantic import BaseModel, Field

from driftloop.core import tags as T
from driftloop.core.errors import StageError
from driftloop.services.preference import golden_pairs
from driftloop.store.feedback_reads import rated_events
from evaluators.golden import exclude_near_duplicates, split_of
from flows.common import StageParams, context, log, stage_run
from retrain.curate import build_preference_set, build_training_set, carry_replay, load_replay, write_jsonl
from retrain.data import row_hash, rows_digest
from retrain.spec import RetrainSpec
from retrain.trainer import train

REPLAY_KEEP = 2000  # replay rows carried into each new model folder


class RetrainResult(BaseModel):
    version: str = Field(description="The registered challenger; empty where nothing was trained.")
    base_version: str
    method: str
    n_train: int
    n_replay: int = 0
    train_seconds: float = 0.0
    final_loss: float = float("nan")
    run_id: str
    output_dir: str = ""
    nothing_to_train: bool = Field(
        default=False,
        description="Too few corrected training-pool items (`retrain.min_train_items`): nothing was trained.",
    )
    needed: int = Field(default=0, description="With nothing_to_train: the items a retrain needs.")
    objective: str = Field(default="sft", description="What the job trained: sft, dpo, kto or mixed.")
    counts: dict[str, int] = Field(default_factory=dict, description="Training rows per kind (preference objectives).")


@task(name="curate-training-set")
def curate(params: StageParams, champion_dir: str) -> tuple[list[dict], dict]:
    """Training pool only, minus anything near a golden item; replay from the champion's folder.

    `retrain.objective` sft, or auto with at least `min_train_items` corrections: the corrections
    (SFT, as always). Otherwise every kind of feedback in the training pool feeds its objective
    (`retrain.curate.build_preference_set`): pairs for dpo, thumbs and ratings for kto, both for
    mixed; auto takes what the data can feed. Rated events on a golden prompt (same hash split as
    the corrections) or near one never come in, nor anything near a golden preference pair's prompt.
    """
    ctx = context(params)
    cfg, store = ctx.cfg, ctx.store
    # Held-out prompts: the golden corrections' and the golden preference pairs' (the preference suite).
    golden = [i["prompt"] for i in store.items("golden")] + [p["prompt"] for p in golden_pairs(store, cfg.golden)[0]]
    pool = store.items("train")
    # Re-checked here: the golden set may have grown since these items were filed as training.
    kept = exclude_near_duplicates(pool, golden, cfg.golden.near_dup_jaccard)
    dropped = len(pool) - len(kept)
    objective = cfg.retrain.objective
    if objective == "sft" or (objective == "auto" and len(kept) >= cfg.retrain.min_train_items):
        examples, manifest = build_training_set(
            kept, load_replay(champion_dir), cfg.retrain.replay_fraction, cfg.retrain.seed
        )
        manifest["objective"] = "sft"
        # Lineage: the feedback event behind each example (replay rows: the item's event where known).
        event_of = {str(i["item_id"]): i.get("source_event_id") for i in pool}
        manifest["sources"] = {e["id"]: [str(event_of[e["id"]])] if event_of.get(e["id"]) else [] for e in examples}
    else:
        examples, manifest = _preference_set(ctx, kept, golden, objective, load_replay(champion_dir))
    manifest["counts"]["dropped_near_golden"] = dropped
    manifest["golden_items"] = len(golden)
    log().info(
        "curated %d training items for %s (+%d replay); %d dropped as near-golden",
        manifest["counts"]["train"],
        manifest["objective"],
        manifest["counts"]["replay"],
        dropped,
    )
    return examples, manifest


def _preference_set(
    ctx, corrected: list[dict], golden: list[str], objective: str, replay: list[dict]
) -> tuple[list[dict], dict]:
    """Rows for the preference objectives. With `auto` choosing DPO, replay rows of earlier
    training data join the pairs as SFT rows (`replay_fraction` of the result), so the job trains
    `mixed`: the pairs push the rejected replies down, and the replay keeps what the model
    already answered right (a DPO run alone lowers the rejected replies everywhere, including on
    the topics they are right for). Replay rows near a held-out prompt are left out. An explicit
    `dpo` trains the pairs alone."""
    cfg = ctx.cfg
    splits = ctx.store.item_splits()
    rated = [e for e in rated_events(ctx.store) if split_of(e["prompt"] or "", splits, cfg.golden) == "train"]
    rated = exclude_near_duplicates(rated, golden, cfg.golden.near_dup_jaccard)
    rows, pm = build_preference_set(rated, corrected)
    chosen = pm["objective"] if objective == "auto" else objective
    usable = {"sft": ("sft",), "dpo": ("dpo",), "kto": ("kto",), "mixed": ("sft", "dpo")}.get(chosen, ())
    rows = [r for r in rows if r["objective"] in usable]
    n_train, replayed = len(rows), []
    if objective == "auto" and chosen == "dpo" and replay and 0 < cfg.retrain.replay_fraction < 1:
        want = round(cfg.retrain.replay_fraction * n_train / (1.0 - cfg.retrain.replay_fraction))
        pool = sorted({str(r["id"]): r for r in replay}.values(), key=lambda r: str(r["id"]))
        pool = exclude_near_duplicates(pool, golden, cfg.golden.near_dup_jaccard)  # held out stays held out
        replayed = [
            {"id": str(r["id"]), "objective": "sft", "prompt": r["prompt"], "completion": r["completion"]}
            for r in random.Random(cfg.retrain.seed).sample(pool, min(want, len(pool)))
        ]
        chosen = "mixed"
    rows += replayed
    manifest = {
        "objective": chosen,
        "counts": {**pm["counts"], "train": n_train, "replay": len(replayed)},
        "kto_weights": pm["kto_weights"],
        "quarantined": pm["quarantined"],
        "sources": pm["sources"],
        "digest": rows_digest(rows),
        "hashes": sorted(row_hash(r) for r in rows),
    }
    return rows, manifest


@task(name="fine-tune")
def fine_tune(spec: RetrainSpec):
    def progress(step: int, total: int, loss: float) -> None:
        if step % max(1, total // 10) == 0 or step == total:
            log().info("fine-tune step %d/%d loss %.4f", step, total, loss)

    return train(spec, progress=progress)


@flow(name="finetune")
def retrain(params: StageParams = StageParams()) -> RetrainResult:
    """Fine-tune the champion on curated feedback and register the result with alias `challenger`."""
    ctx = context(params)
    cfg, tr = ctx.cfg, ctx.tracker
    base_version, base_dir = tr.resolve("champion")
    with stage_run(ctx, "retrain", params.parent_run_id) as run_id:
        examples, manifest = curate(params, str(base_dir))
        if manifest["objective"] == "none" or manifest["counts"]["train"] < cfg.retrain.min_train_items:
            # Thumbs-only feedback finds a regression but gives no example to learn from: a result, not a
            # failure (the stage run finishes, tagged), so the cycle can record it and cool down.
            tr.set_tags(run_id, {T.SKIPPED: "nothing to train on"})
            log().warning(
                "retrain: %d corrected training-pool items, %d needed: nothing to train on",
                manifest["counts"]["train"],
                cfg.retrain.min_train_items,
            )
            return RetrainResult(
                version="",
                base_version=base_version,
                method=cfg.retrain.method,
                n_train=manifest["counts"]["train"],
                run_id=run_id,
                nothing_to_train=True,
                needed=cfg.retrain.min_train_items,
            )
        job_dir = cfg.state_path / "retrain" / f"{run_id[:8]}-{uuid.uuid4().hex[:6]}"
        data = write_jsonl(examples, job_dir / "data.jsonl")
        r = cfg.retrain
        settings = {**r.training_params(), "objective": manifest["objective"]}
        if manifest["objective"] == "kto":
            settings["kto_desirable_weight"], settings["kto_undesirable_weight"] = manifest["kto_weights"]
        spec = RetrainSpec(
            base_model=str(base_dir),
            data_path=str(data),
            output_dir=str(job_dir / "result"),
            device=cfg.model.device,
            data_digest=manifest["digest"],
            **settings,
        )
        spec.to_json(job_dir / "spec.json")
        tr.log_params(run_id, {**{f"spec.{k}": v for k, v in spec.to_dict().items()}, "base_version": base_version})
        tr.log_dict(run_id, manifest, "data_manifest.json")
        try:
            result = fine_tune(spec)
        except Exception as e:  # noqa: BLE001 - every training failure is reported the same way
            msg = f"retrain: fine-tuning failed: {type(e).__name__}: {e}".splitlines()[0]
            # Recorded on the stage run (marked FAILED by stage_run) and logged at error level for
            # alerting; nothing was registered, so `champion` (and any `challenger`) stay as they were.
            tr.set_tags(run_id, {T.ERROR: msg[:5000]})
            log().error("%s; champion stays version %s", msg, base_version)
            raise StageError(msg) from e
        m = result.metrics
        tr.log_metrics(run_id, {k: v for k, v in m.items() if isinstance(v, (int, float))})
        for step, loss in m.get("loss_curve", []):
            tr.log_metrics(run_id, {"train_loss": loss}, step=int(step))
        # The job's record (metrics, manifest, spec, a LoRA adapter); the model itself is stored once,
        # as the version's MLflow Model below.
        tr.log_artifacts(run_id, result.output_dir, "job", skip=("model",))
        tr.log_training_set(run_id, examples, manifest, str(data))
        # Replay keeps corrections only: a pair or a rated row teaches relative to its own model.
        sft_rows = [e for e in examples if "completion" in e and "label" not in e]
        carry_replay(result.model_dir, load_replay(base_dir), sft_rows, r.seed, keep=REPLAY_KEEP)
        version = tr.register_model(
            run_id,
            result.model_dir,
            description=f"{r.method} {manifest['objective']} fine-tune of version {base_version} on "
            f"{manifest['counts']['train']} training-pool items + {manifest['counts']['replay']} replay.",
            tags={T.ORIGIN: "retrain", T.BASE_VERSION: base_version, T.METHOD: r.method, T.RETRAIN_RUN: run_id},
        )
        shutil.rmtree(result.model_dir, ignore_errors=True)  # the registry holds it now; no second copy
        tr.set_alias("challenger", version)
        tr.set_tags(run_id, {T.CHALLENGER_VERSION: version})
        return RetrainResult(
            version=version,
            base_version=base_version,
            method=r.method,
            n_train=manifest["counts"]["train"],
            n_replay=manifest["counts"]["replay"],
            train_seconds=float(m.get("train_seconds", m.get("wall_seconds", 0.0))),
            final_loss=float(m.get("final_loss", float("nan"))),
            run_id=run_id,
            output_dir=result.output_dir,
            objective=manifest["objective"],
            counts={k: int(v) for k, v in manifest["counts"].items() if k in ("sft", "dpo", "kto")},
        )
