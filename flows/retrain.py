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

import uuid

from prefect import flow, task
from pydantic import BaseModel, Field

from driftloop import tags as T
from driftloop.errors import StageError
from evaluators.golden import exclude_near_duplicates
from flows.common import StageParams, context, log, stage_run
from retrain.curate import build_training_set, carry_replay, load_replay, write_jsonl
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
    nothing_to_train: bool = Field(default=False, description="Too few corrected training-pool items "
                                                              "(`retrain.min_train_items`): nothing was trained.")
    needed: int = Field(default=0, description="With nothing_to_train: the items a retrain needs.")


@task(name="curate-training-set")
def curate(params: StageParams, champion_dir: str) -> tuple[list[dict], dict]:
    """Training pool only, minus anything near a golden item; replay from the champion's folder."""
    ctx = context(params)
    cfg, store = ctx.cfg, ctx.store
    golden = [i["prompt"] for i in store.items("golden")]
    pool = store.items("train")
    # Re-checked here: the golden set may have grown since these items were filed as training.
    kept = exclude_near_duplicates(pool, golden, cfg.golden.near_dup_jaccard)
    dropped = len(pool) - len(kept)
    examples, manifest = build_training_set(kept, load_replay(champion_dir), cfg.retrain.replay_fraction,
                                            cfg.retrain.seed)
    manifest["counts"]["dropped_near_golden"] = dropped
    manifest["golden_items"] = len(golden)
    log().info("curated %d training-pool items (+%d replay); %d dropped as near-golden",
               manifest["counts"]["train"], manifest["counts"]["replay"], dropped)
    return examples, manifest


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
        if manifest["counts"]["train"] < cfg.retrain.min_train_items:
            # Thumbs-only feedback finds a regression but gives no example to learn from: a result, not a
            # failure (the stage run finishes, tagged), so the cycle can record it and cool down.
            tr.set_tags(run_id, {T.SKIPPED: "nothing to train on"})
            log().warning("retrain: %d corrected training-pool items, %d needed: nothing to train on",
                          manifest["counts"]["train"], cfg.retrain.min_train_items)
            return RetrainResult(version="", base_version=base_version, method=cfg.retrain.method,
                                 n_train=manifest["counts"]["train"], run_id=run_id, nothing_to_train=True,
                                 needed=cfg.retrain.min_train_items)
        job_dir = cfg.state_path / "retrain" / f"{run_id[:8]}-{uuid.uuid4().hex[:6]}"
        data = write_jsonl(examples, job_dir / "data.jsonl")
        r = cfg.retrain
        spec = RetrainSpec(base_model=str(base_dir), data_path=str(data), output_dir=str(job_dir / "result"),
                           device=cfg.model.device, data_digest=manifest["digest"], **r.training_params())
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
        tr.log_artifacts(run_id, result.output_dir, "job")
        carry_replay(result.model_dir, load_replay(base_dir), examples, r.seed, keep=REPLAY_KEEP)
        version = tr.register_model(
            run_id, result.model_dir,
            description=f"{r.method} fine-tune of version {base_version} on {manifest['counts']['train']} "
                        f"training-pool items + {manifest['counts']['replay']} replay.",
            tags={T.ORIGIN: "retrain", T.BASE_VERSION: base_version,
                  T.METHOD: r.method, T.RETRAIN_RUN: run_id})
        tr.set_alias("challenger", version)
        tr.set_tags(run_id, {T.CHALLENGER_VERSION: version})
        return RetrainResult(version=version, base_version=base_version, method=r.method,
                             n_train=manifest["counts"]["train"], n_replay=manifest["counts"]["replay"],
                             train_seconds=float(m.get("train_seconds", m.get("wall_seconds", 0.0))),
                             final_loss=float(m.get("final_loss", float("nan"))), run_id=run_id,
                             output_dir=result.output_dir)
