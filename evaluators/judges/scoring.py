"""Judge one window's events through the verdict cache, within the judge's call budget.

Which events: those with a human label first (they calibrate the judge and anchor its
estimates), then the others; within each group in the order of their content hash, a
fixed pseudo-random order, so a budget cut keeps a random sample of each group and the
same events are judged again next time (and come from the cache). Only the events to be
scored are read (`texts`), since a window frame carries no texts.

    >>> run = score_window(judge, frame, human, cache, spec.max_calls, texts=store.read_texts)
    >>> run.scores.notna().sum(), run.calls, run.over_budget
    (1000, 212, 0)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from evaluators.judges.backends import Judge
from evaluators.judges.cache import JudgeCache
from evaluators.judges.rubric import Item

BATCH = 64  # events per backend call batch, and per progress report


@dataclass
class ScoreRun:
    scores: pd.Series  # by the frame's index: a score in [0, 1], NaN where none
    calls: int  # events scored by the backend (the rest came from the cache)
    over_budget: int  # events left unjudged by the call budget
    tokens: int = 0  # tokens the backend's model read for them
    seconds: float = 0.0  # wall time spent in the backend


def score_window(
    judge: Judge,
    frame: pd.DataFrame,
    human: pd.Series,
    cache: JudgeCache | None,
    max_calls: int,
    texts: Callable[[list[str]], dict[str, Item]],
    progress: Callable[[int, int], None] | None = None,
) -> ScoreRun:
    """Scores of `frame`'s events (by `event_id`): cached ones free, at most `max_calls` new ones.

    `human` is the label the judge stands in for (NaN where none), `texts(ids)` returns the
    events' texts by id, and `progress(done, total)` is called after each batch.
    """
    ids = frame["event_id"].astype(str).tolist()
    items = texts(ids)
    hashes = {i: items[i].hash for i in ids if i in items}
    labelled = human.notna().to_numpy()
    order = sorted((k for k, i in enumerate(ids) if i in hashes), key=lambda k: (not labelled[k], hashes[ids[k]]))
    known = cache.get(judge.fingerprint, judge.rubric.hash, list(hashes.values())) if cache else {}
    todo = [k for k in order if hashes[ids[k]] not in known]
    over = max(0, len(todo) - max_calls)
    todo = todo[:max_calls]
    tokens, seconds = getattr(judge, "tokens", 0), 0.0
    for start in range(0, len(todo), BATCH):
        batch = todo[start : start + BATCH]
        t0 = time.perf_counter()
        got = judge.score([items[ids[k]] for k in batch])
        seconds += time.perf_counter() - t0
        new = {hashes[ids[k]]: s for k, s in zip(batch, got) if s is not None}
        known.update(new)
        if cache is not None and new:
            cache.put(judge.fingerprint, judge.rubric.hash, new)
        if progress is not None:
            progress(min(start + BATCH, len(todo)), len(todo))
    values = np.array([known.get(hashes.get(i, ""), np.nan) for i in ids], dtype=float)
    used = getattr(judge, "tokens", 0) - tokens
    return ScoreRun(pd.Series(values, index=frame.index), len(todo), over, used, seconds)
