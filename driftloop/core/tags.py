"""Every MLflow tag key driftloop writes or reads, in one place.

A tag is how a run, a registered version or a search finds driftloop's evidence in
MLflow; a key spelled twice is a search that silently finds nothing. Modules import
the names from here and never spell a key themselves.

    >>> from driftloop import tags as T
    >>> T.KIND, T.decision_action("gate"), T.gate_suite("golden")
    ('driftloop.kind', 'driftloop.gate.action', 'driftloop.gate.golden')
"""

from __future__ import annotations

PREFIX = "driftloop."

# What a run is and what it holds.
KIND = "driftloop.kind"  # cycle | evaluation | promotion
STAGE = "driftloop.stage"  # ingest, monitor, benchmark-<model>, retrain, register
OWNER = "driftloop.owner"  # the cycle's lease owner
OUTCOME = "driftloop.outcome"  # the cycle's outcome sentence
POLICY_VERSION = "driftloop.policy_version"
RETRAIN_VIA = "driftloop.retrain_via"
RUNNER = "driftloop.runner"
GOLDEN_HASH = "driftloop.golden_hash"
ERROR = "driftloop.error"
SKIPPED = "driftloop.skipped"

# Models and versions.
MODEL = "driftloop.model"  # the reference asked for (champion, an alias, a version, a path)
MODEL_VERSION = "driftloop.model_version"
MODEL_PATH = "driftloop.model_path"
ORIGIN = "driftloop.origin"  # base | retrain
BASE_VERSION = "driftloop.base_version"
METHOD = "driftloop.method"
RETRAIN_RUN = "driftloop.retrain_run"
CHALLENGER_VERSION = "driftloop.challenger_version"
CYCLE_RUN = "driftloop.cycle_run"
CYCLE_RUN_URL = "driftloop.cycle_run_url"
REJECTED_BY = "driftloop.rejected_by"
PROMOTED_BY = "driftloop.promoted_by"
PROMOTION = "driftloop.promotion"
GATE_VERDICT = "driftloop.gate.verdict"
# A version's place in the loop: candidate (registered, under evaluation), promoted (was or is the
# champion) or rejected (the gate said no; it never carries an alias).
STATUS = "driftloop.status"
STATUS_CANDIDATE, STATUS_PROMOTED, STATUS_REJECTED = "candidate", "promoted", "rejected"

# A promotion run (the champion alias moved).
VERSION = "driftloop.version"
BY = "driftloop.by"
HOW = "driftloop.how"
REASON = "driftloop.reason"
PREVIOUS = "driftloop.previous"

# On-demand evaluations.
WINDOW = "driftloop.window"
SUITES = "driftloop.suites"
REQUESTED_BY = "driftloop.requested_by"
HEARTBEAT = "driftloop.heartbeat"
MLFLOW_DELIVERY = "driftloop.mlflow_delivery"
MLFLOW_EVENT = "driftloop.mlflow_event"
PREFECT_FLOW_RUN = "driftloop.prefect_flow_run"  # the Prefect flow run of an evaluation submitted to a deployment


def decision_action(stage: str) -> str:
    """`driftloop.<stage>.action`: the action a decision of that stage (decide, gate, retrain) took."""
    return f"{PREFIX}{stage}.action"


def decision_reason(stage: str) -> str:
    return f"{PREFIX}{stage}.reason"


def gate_suite(suite: str) -> str:
    """`driftloop.gate.<suite>`: the gate's figures for one suite, on a registry version."""
    return f"{PREFIX}gate.{suite}"
