"""The `openai` judge backend: verdict log-probs from an OpenAI-compatible /completions endpoint (httpx).

Each verdict is one request, `{"prompt": rubric + verdict, "max_tokens": 0, "echo": true,
"logprobs": 1, "temperature": 0}`; the reply's `logprobs.token_logprobs` of the tokens whose
`text_offset` is at or after the rubric's end are summed (the scoring of the `hf` backend,
so the two agree on one model). vLLM, llama.cpp's server and TGI serve this; chat-only APIs
do not return prompt log-probs and cannot be used. Requests run `concurrency` at a time,
each with `timeout_s`, retried `retries` times with exponential back-off on a timeout, a
connection error, 429 or a 5xx; any other status fails at once.

    >>> judge = OpenAIJudge(spec, spec.backend, Path("."))
    >>> judge.score([Item("How do I pay?", "Open Billing > Pay.")])
    [0.91]
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from driftloop.core.config import JudgeSpec
from driftloop.core.config_judges import OpenAIBackend
from driftloop.core.errors import ConfigError, StageError
from evaluators.judges.backends import api_key, verdict_probability
from evaluators.judges.rubric import Item, Rubric

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
BACKOFF_S = 0.5  # first wait; doubles with each retry


class OpenAIJudge:
    """Verdict log-probs from an OpenAI-compatible completions endpoint."""

    def __init__(self, spec: JudgeSpec, backend: OpenAIBackend, base_dir: Path) -> None:
        self.name = spec.name
        self.rubric = Rubric(spec)
        self.backend = backend
        self.url = backend.base_url.rstrip("/") + "/completions"
        key = api_key(backend, base_dir, spec.name)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.fingerprint = f"openai:{backend.base_url.rstrip('/')}#{backend.model}"
        self.tokens = 0  # the endpoint's usage.prompt_tokens, else the echoed tokens
        self._count = threading.Lock()

    def check(self) -> str:
        """One line on the endpoint: GET /models answers; raises ConfigError naming the judge where not."""
        url = self.backend.base_url.rstrip("/") + "/models"
        try:
            r = httpx.get(url, headers=self.headers, timeout=min(self.backend.timeout_s, 10.0))
        except httpx.HTTPError as e:
            raise ConfigError(f"judge {self.name!r}: endpoint {url} unreachable ({type(e).__name__})") from None
        if r.status_code in (401, 403):
            raise ConfigError(f"judge {self.name!r}: endpoint {url} refused the key (HTTP {r.status_code})")
        if r.status_code >= 400:
            raise ConfigError(f"judge {self.name!r}: endpoint {url} answered HTTP {r.status_code}")
        return f"judge {self.name}: endpoint {self.backend.base_url} ok"

    def _post(self, client: httpx.Client, text: str) -> dict:
        body = {
            "model": self.backend.model,
            "prompt": text,
            "max_tokens": 0,
            "echo": True,
            "logprobs": 1,
            "temperature": 0,
        }
        for attempt in range(self.backend.retries + 1):
            last = attempt == self.backend.retries
            try:
                r = client.post(self.url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                if last:
                    raise StageError(
                        f"judge {self.name!r}: {self.url}: {type(e).__name__} after {attempt + 1} tries"
                    ) from None
            else:
                if r.status_code < 400:
                    return r.json()
                if r.status_code not in RETRY_STATUS or last:
                    raise StageError(f"judge {self.name!r}: {self.url} answered HTTP {r.status_code}: {r.text[:200]}")
            time.sleep(BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")

    def logprob(self, client: httpx.Client, context: str, verdict: str) -> float:
        reply = self._post(client, context + verdict)
        try:
            lp = reply["choices"][0]["logprobs"]
            pairs = zip(lp["text_offset"], lp["token_logprobs"])
            picked = [v for offset, v in pairs if offset >= len(context) and v is not None]
        except (KeyError, IndexError, TypeError):
            raise StageError(
                f"judge {self.name!r}: {self.url} returned no prompt log-probs (it must support echo and logprobs)"
            ) from None
        if not picked:
            raise StageError(f"judge {self.name!r}: the verdict {verdict!r} has no token to score after the rubric")
        usage = reply.get("usage") if isinstance(reply, dict) else None
        read = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        with self._count:
            self.tokens += read if isinstance(read, int) else len(lp["token_logprobs"])
        return float(sum(picked))

    def score(self, items: list[Item]) -> list[float | None]:
        contexts = [self.rubric.context(i) for i in items]
        jobs = [(c, w) for c in contexts for w in (self.rubric.good, self.rubric.bad)]
        with (
            httpx.Client(headers=self.headers, timeout=self.backend.timeout_s) as client,
            ThreadPoolExecutor(max_workers=self.backend.concurrency) as pool,
        ):
            logps = list(pool.map(lambda job: self.logprob(client, *job), jobs))
        return [verdict_probability(logps[2 * k], logps[2 * k + 1]) for k in range(len(items))]
