"""What every config section shares: the `DRIFTLOOP_` prefix and a base model that forbids unknown keys.

    >>> class MySection(_Section):
    ...     size: int = 1
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "DRIFTLOOP_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
