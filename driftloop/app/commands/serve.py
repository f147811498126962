"""`driftloop serve`: run the HTTP API with uvicorn: feedback (POST /v1/feedback), on-demand
evaluations (POST /v1/evaluations, GET /v1/evaluations/{id}) and the MLflow registry webhook
receiver (POST /v1/hooks/mlflow)."""

from __future__ import annotations

import argparse

from driftloop.app.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP API: feedback, on-demand evaluations, the MLflow registry webhook")
    p.add_argument("--host", help="address to listen on (default: api.host)")
    p.add_argument("--port", type=int, help="TCP port (default: api.port)")
    p.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from driftloop.app.api import create_app
    from driftloop.app.api.limits import uvicorn_options
    from driftloop.app.report import console

    cfg = config(args)
    app = create_app(cfg, config_path=args.config)
    host, port = args.host or cfg.api.host, args.port if args.port is not None else cfg.api.port
    console.print(
        f"driftloop API on http://{host}:{port}: /v1/feedback, /v1/evaluations, /v1/hooks/mlflow "
        f"(store {app.state.store!r})"
    )
    # No access log: request lines carry nothing useful and would flood the terminal under load.
    # Keep-alive, head timeout, head size and concurrency from api.limits (driftloop.app.api.limits).
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning", **uvicorn_options(cfg.api.limits))
    return 0
