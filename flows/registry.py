"""Registry bootstrap: make sure a `champion` exists before the first cycle.

With `model.base: demo` the offline demo model is built (cached under
`<state_dir>/cache/`); a local path is registered as it is; a Hugging Face id
must already be in the local cache (driftloop never downloads at run time).

    >>> ensure_champion(StageParams(config="driftloop.yaml"))
    '1'
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from prefect import task

from driftloop.core import tags as T
from driftloop.core.config import DEMO_MODEL
from driftloop.core.errors import ConfigError
from flows.common import StageParams, context, log


def base_model_dir(params: StageParams) -> Path:
    """Local folder of the configured base model (building the demo model if needed)."""
    ctx = context(params)
    base = ctx.cfg.model.base
    if base == DEMO_MODEL:
        from retrain.base_model import build_demo_model

        out = ctx.cfg.state_path / "cache" / "demo-model"
        log().info("building the demo base model (cached in %s)", out)
        return build_demo_model(
            out, progress=lambda s, n, loss: log().info("demo model step %d/%d loss %.3f", s, n, loss)
        )
    p = ctx.cfg.path(base)
    if p.exists():
        return p
    # A hub id: only from the local cache; save a plain copy so the registry holds the weights.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    except OSError:
        raise ConfigError(
            f"model.base: {base!r} is neither a local path nor a model in the local Hugging Face cache"
        ) from None
    out = Path(tempfile.mkdtemp(prefix="driftloop-base-"))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@task(name="ensure-champion")
def ensure_champion(params: StageParams) -> str:
    """Version the `champion` alias points at, registering the base model as it if none does."""
    ctx = context(params)
    tr = ctx.tracker
    current = tr.alias_version("champion")
    if current is not None:
        return current
    src = base_model_dir(params)
    run = tr.start_run("register-base-model", tags={T.STAGE: "register"})
    try:
        version = tr.register_model(
            run,
            src,
            description=f"Base model {ctx.cfg.model.base!r}, registered as the first champion.",
            tags={T.ORIGIN: "base"},
        )
        tr.move_champion(version, by="driftloop", reason=f"base model {ctx.cfg.model.base!r}", how="initial")
    except BaseException:
        tr.end_run(run, failed=True)
        raise
    tr.end_run(run)
    if ctx.cfg.model.base != DEMO_MODEL and not ctx.cfg.path(ctx.cfg.model.base).exists():
        shutil.rmtree(src, ignore_errors=True)
    log().info("registered %s as version %s with alias champion", ctx.cfg.model.base, version)
    return version
