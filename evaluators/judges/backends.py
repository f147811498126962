"""Judge backends: each turns events into scores in [0, 1], the probability that a response is good.

- `hf`: a local causal LM reads the rubric; the score is the softmax of the log-probabilities
  of the `good` and the `bad` verdict words after the rubric's text (deterministic: eval
  mode, no sampling).
- `openai`: the same scoring through an OpenAI-compatible /completions endpoint that
  returns prompt log-probs (`evaluators.judges.openai_client`).
- `reference`: similarity of the response to the user's correction: token F1 (lexical,
  the default: no model, so a paraphrase scores low) or the cosine of all-MiniLM-L6-v2
  embeddings (the `embeddings` extra, which ships the weights); events without a
  correction get no score.

Both log-probability backends score the verdict the same way: the full text (rubric up to
the placeholder, then the verdict word) is tokenised once, and the verdict's tokens are
those that start at or after the rubric's last character, as an echoing completions
endpoint reports them.

    >>> judge = make_judge(cfg.judges[0], cfg.base_dir)
    >>> judge.score([Item("How do I pay?", "Open Billing > Pay.")])
    [0.93]
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from pathlib import Path
from typing import Protocol

from driftloop.core.config import JudgeSpec
from driftloop.core.config_judges import HFBackend, OpenAIBackend
from driftloop.core.errors import ConfigError, StageError
from evaluators.judges.rubric import Item, Rubric


class Judge(Protocol):
    name: str
    fingerprint: str  # what identifies the scoring model: cached verdicts are keyed by it
    rubric: Rubric
    tokens: int  # tokens the model read so far (prompt and verdict, both verdicts); 0 for a reference judge

    def score(self, items: list[Item]) -> list[float | None]: ...


def verdict_probability(logp_good: float, logp_bad: float) -> float:
    """P(good) from the two verdicts' log-probabilities: a softmax over the pair."""
    return 1.0 / (1.0 + math.exp(min(logp_bad - logp_good, 700.0)))


def make_judge(spec: JudgeSpec, base_dir: Path) -> Judge:
    """The judge a spec names; raises ConfigError (one line naming the judge) where it cannot be built."""
    if spec.backend.kind == "hf":
        return HFJudge(spec, spec.backend, base_dir)
    if spec.backend.kind == "openai":
        from evaluators.judges.openai_client import OpenAIJudge

        return OpenAIJudge(spec, spec.backend, base_dir)
    return ReferenceJudge(spec)


class ReferenceJudge:
    """Similarity of the response to the correction: token F1 (lexical) or MiniLM cosine (embedding).

    The score is the similarity rescaled piecewise-linearly so that `threshold` maps to 0.5
    (0 stays 0, 1 stays 1): the verdict boundary of every judge is 0.5.
    """

    def __init__(self, spec: JudgeSpec) -> None:
        from driftloop.core.config_judges import ReferenceBackend

        assert isinstance(spec.backend, ReferenceBackend)
        self.name = spec.name
        self.rubric = Rubric(spec)
        self.backend = spec.backend
        self.fingerprint = f"reference:{spec.backend.similarity}:{spec.backend.threshold}"
        self.tokens = 0  # no language model reads the items
        self._embed = None
        if spec.backend.similarity == "embedding":
            try:
                from evaluators.text_drift import load_embedder

                self._embed = load_embedder()
            except ImportError:
                raise ConfigError(
                    f"judge {spec.name!r}: similarity: embedding needs the `embeddings` extra "
                    "(pip install 'driftloop[embeddings]')"
                ) from None

    def similarity(self, items: list[Item]) -> list[float | None]:
        if self._embed is None:
            return [token_f1(i.response, i.correction) if i.correction else None for i in items]
        pairs = [i for i in items if i.correction]
        vecs = self._embed([t for i in pairs for t in (i.response, i.correction or "")])
        cos = iter(float(max(0.0, vecs[2 * k] @ vecs[2 * k + 1])) for k in range(len(pairs)))
        return [next(cos) if i.correction else None for i in items]

    def score(self, items: list[Item]) -> list[float | None]:
        t = self.backend.threshold
        return [
            None if s is None else (s / (2 * t) if s < t else 0.5 + (s - t) / (2 * (1 - t)))
            for s in self.similarity(items)
        ]


_WORD = re.compile(r"\w+", re.UNICODE)


def token_f1(response: str, reference: str) -> float:
    """Harmonic mean of word precision and recall of `response` against `reference` (multiset overlap)."""
    a, b = _WORD.findall(response.lower()), _WORD.findall(reference.lower())
    if not a or not b:
        return float(a == b)
    common = sum((Counter(a) & Counter(b)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


def _model_fingerprint(folder: Path) -> str:
    """Hash of a model folder's config and the sizes and names of its weight files (cheap, no full read)."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"):
            h.update(p.name.encode())
            h.update(p.read_bytes() if p.suffix == ".json" else str(p.stat().st_size).encode())
    return h.hexdigest()[:16]


MAX_BATCH = 32  # texts per forward pass of an hf judge
LOGITS_BUDGET = 1 << 27  # ... and at most this many logits per pass (512 MB in float32)


class HFJudge:
    """A local causal LM scoring the verdict words after the rubric; loaded on first use."""

    def __init__(self, spec: JudgeSpec, backend: HFBackend, base_dir: Path) -> None:
        from driftloop.core.config import looks_like_path

        self.name = spec.name
        self.rubric = Rubric(spec)
        self.backend = backend
        ref = backend.model
        self.model_ref = str((base_dir / ref).resolve()) if looks_like_path(ref) else ref
        folder = Path(self.model_ref)
        if looks_like_path(ref) and not folder.is_dir():
            raise ConfigError(f"judge {spec.name!r}: model folder {folder} not found")
        self.fingerprint = f"hf:{_model_fingerprint(folder) if folder.is_dir() else ref}"
        self._model = None
        self._tok = None
        self.tokens = 0

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            device = self.backend.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            try:
                self._tok = AutoTokenizer.from_pretrained(self.model_ref, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(self.model_ref, local_files_only=True, dtype=torch.float32)
            except OSError as e:
                raise StageError(f"judge {self.name!r}: cannot load model {self.model_ref}: {e}") from None
            if not getattr(self._tok, "is_fast", False):  # offsets locate the verdict's tokens
                raise StageError(f"judge {self.name!r}: model {self.model_ref} has no fast tokenizer (tokenizer.json)")
            self._model = model.to(device).eval()
        return self._model, self._tok

    def _encode(self, context: str, verdict: str) -> tuple[list[int], list[int]]:
        """The text's token ids (its start cut to the context limit) and the positions of the verdict's tokens."""
        model, tok = self._load()
        enc = tok(context + verdict, return_offsets_mapping=True, add_special_tokens=False)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        limit = min(self.backend.max_tokens, getattr(model.config, "n_positions", None) or self.backend.max_tokens)
        cut = max(0, len(ids) - limit)  # drop the rubric's start, never the verdict
        ids, offsets = ids[cut:], offsets[cut:]
        positions = [i for i, (start, _) in enumerate(offsets) if start >= len(context) and i > 0]
        if not positions:
            raise StageError(f"judge {self.name!r}: the verdict {verdict!r} has no token to score after the rubric")
        self.tokens += len(ids)
        return ids, positions

    def _logprobs(self, encoded: list[tuple[list[int], list[int]]]) -> list[float]:
        """Summed log-probability of each text's verdict tokens, the texts run in padded batches.

        Right padding under an attention mask leaves every real token's logits as they are
        alone (a causal model never attends forward); batches are bounded by their logits' size.
        """
        import torch

        model, _ = self._load()
        vocab = int(getattr(model.config, "vocab_size", 0) or 50_000)
        order = sorted(range(len(encoded)), key=lambda k: len(encoded[k][0]))
        out = [0.0] * len(encoded)
        start = 0
        while start < len(order):
            longest = len(encoded[order[min(len(order), start + MAX_BATCH) - 1]][0])
            size = max(1, min(MAX_BATCH, LOGITS_BUDGET // max(1, longest * vocab)))
            chunk = order[start : start + size]
            width = len(encoded[chunk[-1]][0])
            x = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, k in enumerate(chunk):
                ids = encoded[k][0]
                x[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            with torch.inference_mode():
                logits = model(input_ids=x.to(model.device), attention_mask=mask.to(model.device)).logits
                for row, k in enumerate(chunk):
                    ids, positions = encoded[k]
                    at = torch.tensor(positions, device=logits.device)
                    logp = torch.log_softmax(logits[row, at - 1].float(), dim=-1)
                    out[k] = float(logp[torch.arange(len(positions)), x[row, positions].to(logits.device)].sum())
            start += size
        return out

    def logprob(self, context: str, verdict: str) -> float:
        """Summed log-probability of the tokens of `verdict` after `context` (see the module doc)."""
        return self._logprobs([self._encode(context, verdict)])[0]

    def score(self, items: list[Item]) -> list[float | None]:
        contexts = [self.rubric.context(item) for item in items]
        encoded = [self._encode(c, w) for c in contexts for w in (self.rubric.good, self.rubric.bad)]
        logps = self._logprobs(encoded)
        return [verdict_probability(logps[2 * k], logps[2 * k + 1]) for k in range(len(items))]


def api_key(backend: OpenAIBackend, base_dir: Path, judge: str) -> str | None:
    """The endpoint's key: from `api_key_env` where set, else `api_key_file`; None where neither is configured."""
    import os

    if backend.api_key_env:
        value = os.environ.get(backend.api_key_env)
        if value:
            return value.strip()
        if not backend.api_key_file:
            raise ConfigError(f"judge {judge!r}: environment variable {backend.api_key_env} is not set")
    if backend.api_key_file:
        path = base_dir / backend.api_key_file
        if not path.is_file():
            raise ConfigError(f"judge {judge!r}: api_key_file {path} not found")
        return path.read_text(encoding="utf-8").strip()
    return None
