"""The `driftloop` command: one console script with subcommands.

    $ driftloop validate            # config, the lm-eval tasks it names, prefect.yaml
    $ driftloop demo                # build the demo model, simulate production, run two cycles
    $ driftloop loop                # one cycle: ingest, monitor, benchmark, decide, retrain, gate
    $ driftloop plan --drop 0.05    # golden items needed to detect a 5-point drop

Errors a user can cause print one line naming the thing at fault and exit 2;
a stage that fails at run time exits 1.

Where a Prefect API is configured (PREFECT_API_URL, or Prefect's own settings), the
flows run on Prefect and each run is recorded there. Without one, they run as plain
Python (`flows.common.run_flow`), without the 10-16 s of Prefect's temporary server;
MLflow records every stage either way. Every command imports what it needs when it runs, so
`--help` loads none of Prefect, MLflow, torch, pandas, Evidently or lm-eval.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from driftloop.core.errors import DriftloopError

DEFAULT_ENV = {
    # Offline by default: nothing may reach a model hub at run time.
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # lm-eval and datasets draw tqdm bars per request batch; the flows log progress instead.
    "TQDM_DISABLE": "1",
}


def _env_defaults() -> None:
    for k, v in DEFAULT_ENV.items():
        os.environ.setdefault(k, v)
    # Prefect keeps its ephemeral database under PREFECT_HOME; keep it with the project.
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".driftloop" / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect won't start without it
    # Prefect logs each flow and task run, and the stages log their progress, at INFO.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def make_parser() -> argparse.ArgumentParser:
    """The parser with every command module's subcommands (see driftloop.app.commands)."""
    from driftloop.app.commands import MODULES

    p = argparse.ArgumentParser(
        prog="driftloop", description="Continuous evaluation and retraining, statistically gated."
    )
    p.add_argument(
        "--config", "-c", default=None, help="driftloop.yaml (default: $DRIFTLOOP_CONFIG or ./driftloop.yaml)"
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name in MODULES:
        importlib.import_module(name).add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    _env_defaults()
    try:
        return int(args.handler(args) or 0)
    except DriftloopError as e:
        print(f"driftloop: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("driftloop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
