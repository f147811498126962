"""The `judges:` section of `driftloop.yaml`: models that rate responses where no human did.

Each judge has a name, a rubric and a backend. The rubric is a Jinja2 template over
`prompt`, `response` and `correction` with one `{{ verdict }}` placeholder, where the
judge's verdict word goes: a log-probability backend scores the rubric's text up to the
placeholder followed by the `good` word against the same text followed by the `bad` word.
A judge feeds the policy only once it agrees with the humans (`min_labels`, `min_kappa`;
see docs/concepts/judges.md). Re-exported by `driftloop.core.config`.

    judges:
      - name: helpful
        rubric: "Q: {{ prompt }}\\nA: {{ response }}\\nIs the answer right?{{ verdict }}"
        backend: {kind: hf, model: ./models/judge}

    >>> JudgeSpec(name="j", rubric="{{ response }} ok?{{ verdict }}", backend={"kind": "reference"}).backend.kind
    'reference'
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from driftloop.core.config_base import _Section

BACKENDS = ("hf", "openai", "reference")
RUBRIC_VARIABLES = ("prompt", "response", "correction", "verdict")


class HFBackend(_Section):
    kind: Literal["hf"] = "hf"
    model: str = Field(
        description="A local folder of a causal LM (relative to the config file), a Hugging Face id already in the local cache, or `demo`: the offline demo model (built on first use, as for model.base: demo)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="cpu", description="Where the judge model runs.")
    max_tokens: int = Field(
        default=1024, ge=16, description="Rubric tokens kept before the verdict (the start is cut beyond this)."
    )


class OpenAIBackend(_Section):
    kind: Literal["openai"] = "openai"
    base_url: str = Field(
        description="Root of an OpenAI-compatible API, e.g. http://localhost:8000/v1; its /completions endpoint must return prompt log-probs (echo, logprobs), as vLLM, llama.cpp and TGI servers do."
    )
    model: str = Field(description="Model name sent with each request.")
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the API key (sent as a Bearer token)."
    )
    api_key_file: str | None = Field(
        default=None,
        description="File holding the API key (relative to the config file); used when no variable is set.",
    )
    timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one request (s).")
    retries: int = Field(default=3, ge=0, description="Retries of a request that timed out or got 429 / 5xx.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Requests in flight at once.")


class ReferenceBackend(_Section):
    kind: Literal["reference"] = "reference"
    similarity: Literal["lexical", "embedding"] = Field(
        default="lexical",
        description="lexical: token F1 of the response against the correction (no model; a paraphrase scores low); embedding: cosine similarity of all-MiniLM-L6-v2 embeddings (the `embeddings` extra, offline).",
    )
    threshold: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Similarity of the response to the correction at or above which the verdict is good; the score is the similarity rescaled so that this maps to 0.5. Events without a correction get no verdict.",
    )


Backend = Annotated[HFBackend | OpenAIBackend | ReferenceBackend, Field(discriminator="kind")]


class JudgeSpec(_Section):
    """One judge: what it reads (the rubric), what scores it (the backend) and when to trust it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="snake_case name, used in metrics and findings.")
    rubric: str = Field(
        description="Jinja2 template over prompt, response and correction, with exactly one {{ verdict }} placeholder where the verdict word goes."
    )
    backend: Backend
    good: str = Field(default=" yes", min_length=1, description="The verdict word for a good response.")
    bad: str = Field(default=" no", min_length=1, description="The verdict word for a bad response.")
    label: Literal["thumbs_up", "rating"] = Field(
        default="thumbs_up",
        description="The human label the judge stands in for: thumbs_up (thumbs_up_rate) or rating (mean_rating; a rating >= 0.5 counts as good for agreement).",
    )
    min_labels: int = Field(
        default=100, ge=2, description="Events with both a human label and a verdict needed before the judge is used."
    )
    min_kappa: float = Field(
        default=0.4,
        ge=-1,
        le=1,
        description="Lowest acceptable lower bound of the 95% bootstrap interval of Cohen's kappa (judge vs human).",
    )
    max_calls: int = Field(
        default=2000, ge=1, description="Backend calls per window at most (cached verdicts are free)."
    )

    @model_validator(mode="before")
    @classmethod
    def _known_backend(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("backend"), dict):
            kind = data["backend"].get("kind")
            if kind not in BACKENDS:
                raise ValueError(
                    f"judge {data.get('name', '?')!r}: unknown backend {kind!r} (known: {', '.join(BACKENDS)})"
                )
        return data

    @model_validator(mode="after")
    def _rubric(self) -> JudgeSpec:
        from jinja2 import TemplateSyntaxError, meta, nodes
        from jinja2.sandbox import SandboxedEnvironment

        try:
            tree = SandboxedEnvironment().parse(self.rubric)
        except TemplateSyntaxError as e:
            raise ValueError(f"judge {self.name!r}: rubric is not a valid Jinja2 template ({e.message})") from None
        names = meta.find_undeclared_variables(tree)
        if "verdict" not in names:
            raise ValueError(f"judge {self.name!r}: rubric has no {{{{ verdict }}}} placeholder")
        if sum(1 for n in tree.find_all(nodes.Name) if n.name == "verdict") != 1:
            raise ValueError(f"judge {self.name!r}: rubric must use {{{{ verdict }}}} exactly once")
        unknown = sorted(names - set(RUBRIC_VARIABLES))
        if unknown:
            raise ValueError(
                f"judge {self.name!r}: rubric uses {', '.join(unknown)}; it may use {', '.join(RUBRIC_VARIABLES)}"
            )
        return self


def _unique(judges: list[JudgeSpec]) -> list[JudgeSpec]:
    seen: set[str] = set()
    for j in judges:
        if j.name in seen:
            raise ValueError(f"judge {j.name!r} is defined twice")
        seen.add(j.name)
    return judges


Judges = Annotated[list[JudgeSpec], AfterValidator(_unique)]
