"""`driftloop serve`: run the HTTP API (POST /v1/feedback) with uvicorn."""

from __future__ import annotations

import argparse

from driftloop.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP API that receives feedback events")
    p.add_argument("--host", help="address to listen on (default: api.host)")
    p.add_argument("--port", type=int, help="TCP port (default: api.port)")
    p.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from driftloop.api import create_app
    from driftloop.report import console

    cfg = config(args)
    app = create_app(cfg)
    host, port = args.host or cfg.api.host, args.port if args.port is not None else cfg.api.port
    console.print(f"driftloop API on http://{host}:{port}/v1/feedback (store {app.state.store!r})")
    # No access log: request lines carry nothing useful and would flood the terminal under load.
    # Keep-alive 75 s (uvicorn's default is 5 s): longer than the idle timeout of common load
    # balancers and clients, so a client never sends on a connection the server is closing.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning", timeout_keep_alive=75)
    return 0
