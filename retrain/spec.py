"""The fine-tuning job's spec: what to train, on what, with which settings.

A `RetrainSpec` is the whole input of one job. It is a plain dataclass that
round-trips through JSON, so the orchestrator can write it, a bare GPU worker
can read it, and the result folder keeps a copy for the audit. Standard
library only: this file runs on the GPU worker.

A RetrainSpec is a `retrain.params.TrainingParams` (the one definition of
the hyperparameters, which the `retrain:` section of driftloop.yaml is built
from) plus paths.

    >>> spec = RetrainSpec(base_model="models/demo", data_path="train.jsonl",
    ...                    output_dir="runs/r1", method="lora", lora_r=16)
    >>> spec.to_json("runs/r1.spec.json")
    >>> RetrainSpec.from_json("runs/r1.spec.json", check_paths=False).lora_r
    16
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from retrain.params import TrainingParams  # standard library only, like this file

DEVICES = ("auto", "cpu", "cuda")


@dataclass(kw_only=True)
class RetrainSpec(TrainingParams):
    """One fine-tuning job: TrainingParams plus where to read and write. Paths are local;
    `data_path` is JSONL rows {"id", "prompt", "completion"}."""

    base_model: str  # folder loadable by AutoModelForCausalLM and AutoTokenizer
    data_path: str
    output_dir: str  # must not exist yet; the job creates it atomically
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # dataset_digest() of the data file's rows, from curation; the job refuses data that differs.
    data_digest: str | None = None

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # JSON writes 6.0 as 6; keep float fields floats so a round trip is exact.
            if hints[f.name] is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
        self.validate(check_paths=False)

    def validate(self, check_paths: bool = True) -> None:
        """Raise ValueError naming the first bad field: wrong type, value out of range, or (with
        `check_paths`) a base model folder or data file that does not exist."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _type_ok(value, hints[f.name]):
                raise ValueError(f"{f.name}: expected {_type_name(hints[f.name])}, got {value!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device: must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not self.output_dir:
            raise ValueError(f"output_dir: must not be empty, got {self.output_dir!r}")
        self.check()
        if check_paths:
            if not Path(self.base_model).is_dir():
                raise ValueError(f"base_model: no model folder at {self.base_model}")
            if not Path(self.data_path).is_file():
                raise ValueError(f"data_path: no data file at {self.data_path}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (field order kept)."""
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path) -> None:
        """Write the spec as indented JSON to `path` (parent folders are created)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: Any, check_paths: bool = True) -> RetrainSpec:
        """Build a spec from a dict, rejecting unknown or missing fields by name; with
        `check_paths`, the base model folder and the data file must exist."""
        if not isinstance(data, dict):
            raise ValueError(f"spec: expected a JSON object, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{key}: unknown field{hint}")
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        for name in required:
            if name not in data:
                raise ValueError(f"{name}: missing field")
        spec = cls(**data)
        if check_paths:
            spec.validate(check_paths=True)
        return spec

    @classmethod
    def from_json(cls, path: str | Path, check_paths: bool = True) -> RetrainSpec:
        """Read and validate a spec file; any problem is a ValueError naming the field at fault."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as e:
            raise ValueError(f"spec: cannot read {path}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"spec: {path} is not valid JSON: {e}") from None
        return cls.from_dict(data, check_paths=check_paths)


def example_hash(example: dict[str, Any]) -> str:
    """sha256 hex of one training example's id, prompt and completion (unit-separated, so
    ("ab", "c") and ("a", "bc") differ). The data manifest lists these."""
    text = "\x1f".join(str(example[k]) for k in ("id", "prompt", "completion"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dataset_digest(examples: list[dict[str, Any]]) -> str:
    """One sha256 over the sorted example hashes: names a training set independent of row order."""
    return hashlib.sha256("\n".join(sorted(example_hash(e) for e in examples)).encode()).hexdigest()


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return isinstance(value, str)  # the allowed values are checked with a clearer message
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "a string"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0]).split(' ', 1)[-1]}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}.get(
        hint, str(hint)
    )
