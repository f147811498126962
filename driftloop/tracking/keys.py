"""Characters MLflow refuses in metric, param and tag keys, replaced by `_` before logging."""

from __future__ import annotations

import re

BAD_KEY = re.compile(r"[^\w.\- :/]")
