"""Each registered version as an MLflow Model: a pyfunc text generator over a Hugging Face folder.

The folder (weights, tokenizer, `replay.jsonl`, build notes) is stored once, as the `hf`
artifact of an MLflow 3 LoggedModel linked to the run that made it; the registry version
points at that LoggedModel (`models:/<model_id>`). `mlflow.pyfunc.load_model` and
`mlflow models serve` run it through `textgen.py`; driftloop's own stages read the folder.

    >>> info = log_text_model(tracker, run_id, "result/model", "Q: {prompt}\\nA:")
    >>> info.model_uri
    'models:/m-0123abcd...'
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driftloop.tracking import Tracker

HF_ARTIFACT = "hf"  # name of the Hugging Face folder among the pyfunc model's artifacts
CODE = Path(__file__).with_name("textgen.py")
EXAMPLE_PROMPT = "How do I reset my password?"
DEFAULT_PARAMS = {"max_new_tokens": 64, "temperature": 0.0}


@dataclass(frozen=True)
class LoggedTextModel:
    model_id: str
    model_uri: str  # models:/<model_id>


def _requirements() -> list[str]:
    """What `mlflow models serve` with a virtualenv/uv env manager installs: the running versions
    (no inference, which would load the weights in a subprocess)."""
    out = []
    for pkg in ("mlflow", "torch", "transformers", "pandas"):
        try:
            out.append(f"{pkg}=={md.version(pkg).split('+')[0]}")
        except md.PackageNotFoundError:
            out.append(pkg)
    return out


def log_text_model(
    tr: Tracker,
    run_id: str,
    model_dir: str | Path,
    prompt_template: str,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> LoggedTextModel:
    """Log `model_dir` as a LoggedModel of run `run_id` (signature, input example, the prompt
    template as model config) and return its id and URI.

    The steps of `mlflow.pyfunc.log_model`, through this tracker's client rather than the
    process-wide tracking URI, and without running the input example (which would load the
    weights once more; the tests serve the model instead). A failure marks the LoggedModel FAILED.
    """
    import tempfile
    import warnings

    import mlflow
    import pandas as pd
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    client = tr.client
    logged = client.create_logged_model(
        tr.experiment_id, name="model", source_run_id=run_id, tags=tags, params=params, model_type="text-generation"
    )
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        example = pd.DataFrame({"prompt": [EXAMPLE_PROMPT]})
        meta = Model(
            artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id, model_id=logged.model_id
        )
        with tempfile.TemporaryDirectory(prefix="driftloop-mlmodel-") as tmp, warnings.catch_warnings():
            # The signature is given: MLflow's hint to add type hints for inferring one does not apply.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\.pyfunc\.utils")
            local = Path(tmp) / "model"
            mlflow.pyfunc.save_model(
                path=str(local),
                python_model=str(CODE),
                artifacts={HF_ARTIFACT: str(model_dir)},
                model_config={"prompt_template": prompt_template},
                signature=infer_signature(example, ["an answer"], params=DEFAULT_PARAMS),
                input_example=example,
                pip_requirements=_requirements(),
                mlflow_model=meta,
            )
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return LoggedTextModel(model_id=logged.model_id, model_uri=f"models:/{logged.model_id}")


def log_model_input(tr: Tracker, run_id: str, version: str) -> str | None:
    """Record registry version `version`'s LoggedModel as an input of run `run_id` (an evaluation
    of it), so the model's page lists the runs that evaluated it; its id, or None for a version
    that is no LoggedModel (registered before models were MLflow Models)."""
    from mlflow.entities import LoggedModelInput

    source = tr.client.get_model_version(tr.model_name, str(version)).source
    if not source.startswith("models:/m-"):
        return None
    model_id = source.removeprefix("models:/")
    tr.client.log_inputs(run_id, models=[LoggedModelInput(model_id)])
    return model_id


def version_folder(tr: Tracker, version: str, source: str) -> Path:
    """The Hugging Face folder of registry version `version`. A local artifact store is read in
    place (no second copy on disk); any other is downloaded once into `tr.cache_dir/v<N>`."""
    import json
    import shutil
    import tempfile
    from urllib.parse import urlparse

    from driftloop.core.errors import StageError

    uri = tr.client.get_model_version_download_uri(tr.model_name, version)
    local = Path(urlparse(uri).path) if uri.startswith("file://") else None if "://" in uri else Path(uri)
    if local is not None and local.is_dir():
        return hf_folder(local)
    dest = tr.cache_dir / f"v{version}"
    if not (dest / ".complete").exists():
        tr.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=tr.cache_dir))
        try:
            got = tr._mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp), tracking_uri=tr.uri)
        except Exception as e:  # noqa: BLE001 - any download failure is a stage failure
            shutil.rmtree(tmp, ignore_errors=True)
            raise StageError(f"model version {version}: download failed: {e}") from None
        (Path(got) / ".complete").write_text(json.dumps({"version": version, "source": source}))
        shutil.rmtree(dest, ignore_errors=True)
        Path(got).rename(dest)
        shutil.rmtree(tmp, ignore_errors=True)
    return hf_folder(dest)


def hf_folder(model_root: Path) -> Path:
    """The Hugging Face folder inside a downloaded MLflow model (read from its MLmodel file), or
    `model_root` itself for a version registered before models were MLflow Models."""
    mlmodel = model_root / "MLmodel"
    if not mlmodel.is_file():
        return model_root
    import yaml

    spec = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    rel = spec["flavors"]["python_function"]["artifacts"][HF_ARTIFACT]["path"]
    return model_root / rel
