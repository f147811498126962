"""lm-eval YAML tasks that ship with driftloop, and the data they read.

`TASKS_DIR` is the include path for `evaluators.benchmark.run_tasks`. A task's
`dataset_kwargs.data_files` may name files relative to its YAML file: the runner
resolves them at run time, so the folder works wherever the package is installed.

    >>> from evaluators.tasks import TASKS_DIR
    >>> (TASKS_DIR / "driftloop_canary.yaml").is_file()
    True
"""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
