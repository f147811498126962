"""Commands of the loop as a whole: validate, demo, loop, status, plan, ui."""

from __future__ import annotations

import argparse

from driftloop.app.commands import config


def add_commands(sub) -> None:
    p = sub.add_parser("validate", help="check the config, the lm-eval tasks and metrics it names, and prefect.yaml")
    p.add_argument("--config", "-c", default=argparse.SUPPRESS, help="driftloop.yaml to check (as `driftloop -c`)")
    p.add_argument(
        "--prefect",
        default=None,
        metavar="PREFECT_YAML",
        help="prefect.yaml to check (default: the one beside the config, else in the working directory; "
        "with neither, it is not checked)",
    )
    p.set_defaults(handler=validate)
    p = sub.add_parser("demo", help="build the demo model, simulate production feedback, run the loop")
    p.add_argument("--resume", action="store_true", help="keep earlier demo state instead of starting clean")
    p.add_argument(
        "--feedback",
        choices=["corrections", "thumbs"],
        default="corrections",
        help="the simulated users: corrections (they correct wrong replies) or thumbs (thumbs and ratings only, "
        "no correction; the retrain learns from preferences)",
    )
    p.set_defaults(handler=demo)
    p = sub.add_parser("loop", help="run one cycle of the loop")
    p.set_defaults(handler=loop)
    p = sub.add_parser("status", help="the loop's state, since when and why, the lease holder, recent history")
    p.add_argument("--history", type=int, default=10, help="how many recent transitions to show")
    p.set_defaults(handler=status)
    p = sub.add_parser(
        "plan",
        help="items a paired test needs: to detect a drop (golden), or to prove "
        "non-inferiority within each task's margin (--suite)",
    )
    p.add_argument("--drop", type=float, default=None, help="accuracy drop to detect, e.g. 0.05")
    p.add_argument(
        "--suite",
        default=None,
        help="a canary or bias suite of the config: items each of its tasks "
        "needs for the non-inferiority test at its margin",
    )
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument(
        "--discordant",
        type=float,
        default=None,
        help="expected share of items on which the models disagree (default: 2 x drop + 0.05; with --suite, 0.2)",
    )
    p.add_argument(
        "--sd",
        action="append",
        default=[],
        metavar="TASK=SD",
        help="with --suite, for a task whose metric is not a 0/1 outcome: the standard deviation "
        "of the per-item difference between two models, in the metric's units (repeatable)",
    )
    p.set_defaults(handler=plan)
    p = sub.add_parser("ui", help="print the commands that open the MLflow and Prefect UIs on the stored state")
    p.set_defaults(handler=ui)


def validate(args: argparse.Namespace) -> int:
    from driftloop.app.validate import validate as run

    for line in run(args.config, args.prefect):
        print(line)
    return 0


def demo(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from driftloop.app import report
    from flows.common import plain_calls, use_engine
    from flows.demo import run_demo

    cfg = config(args)
    with nullcontext() if use_engine(cfg) else plain_calls():  # the cycles' flows, as `loop` runs them
        summaries = run_demo(args.config, fresh=not args.resume, feedback=args.feedback)
    report.demo_table(summaries, cfg)
    return 0


def loop(args: argparse.Namespace) -> int:
    from driftloop.app import report

    cfg = config(args, check_files=True)  # every user error before anything is written
    from flows.common import StageParams, run_flow, use_engine
    from flows.loop import loop as run

    # On Prefect where an API is configured, so the cycle's flow run is recorded there.
    report.cycle_table(run_flow(run, StageParams(config=args.config), engine=use_engine(cfg)))
    return 0


def status(args: argparse.Namespace) -> int:
    from driftloop.app import report
    from driftloop.core.errors import InputError

    if args.history < 0:
        raise InputError(f"--history {args.history}: must be 0 or more")
    report.status(config(args), history=args.history)
    return 0


def plan(args: argparse.Namespace) -> int:
    from driftloop.app import report
    from driftloop.core.errors import InputError

    if (args.drop is None) == (args.suite is None):
        raise InputError("plan: give --drop (a target suite's drop to detect) or --suite (a canary or bias suite)")
    if args.suite is not None:
        sds: dict[str, float] = {}
        for item in args.sd:
            name, _, value = item.partition("=")
            try:
                sds[name] = float(value)
            except ValueError:
                raise InputError(f"--sd {item}: expected TASK=SD, e.g. crows_pairs_english=4.2") from None
            if sds[name] <= 0:
                raise InputError(f"--sd {item}: the standard deviation must be positive")
        return report.plan_suite(args.suite, args.power, args.discordant, sds, config(args))
    return report.plan(args.drop, args.power, args.discordant, config(args))


def ui(args: argparse.Namespace) -> int:
    from driftloop.app import report

    report.ui(config(args))
    return 0
