"""What every config section shares: the `DRIFTLOOP_` prefix, a base model that forbids unknown keys,
and the pydantic-settings sources that read the config's layers (the YAML file, the environment,
overrides) for `driftloop.core.config.load_config` to merge.

    >>> class MySection(_Section):
    ...     size: int = 1
    >>> from driftloop.core.config import Config
    >>> read_layers(Config, None, {"DRIFTLOOP_POLICY__VERSION": "2"}, {}, frozenset())
    ({}, {'policy': {'version': '2'}}, {})
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from driftloop.core.errors import ConfigError

ENV_PREFIX = "DRIFTLOOP_"
NESTING = "__"  # between key levels in a variable name: DRIFTLOOP_POLICY__ALPHA


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def read_layers(
    root: type[BaseModel],
    path: Path | None,
    env: Mapping[str, str],
    overrides: dict[str, Any],
    reserved: frozenset[str],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The (YAML file, DRIFTLOOP_* variables of `env`, `overrides`) layers as nested mappings, unvalidated.

    Each is read by a pydantic-settings source for the fields of `root`; the
    caller merges them and validates once, so an error names its key path
    whichever layer set it. `path` None: no file. Names in `reserved` are
    variables with the prefix that are not config keys. Raises ConfigError
    (one line) for a file that is no YAML mapping or a variable whose list or
    mapping value is neither JSON nor YAML.
    """
    yaml_source, env_source, init_source = _sources(root, reserved)
    return (yaml_source(path)() if path is not None else {}), env_source(env)(), init_source(overrides)()


@functools.cache
def _sources(root: type[BaseModel], reserved: frozenset[str]) -> tuple[Any, Any, Any]:
    """Source classes for `root`, built on first use: commands that load no config skip pydantic-settings."""
    from pydantic_settings import (
        BaseSettings,
        EnvSettingsSource,
        InitSettingsSource,
        SettingsConfigDict,
        YamlConfigSettingsSource,
    )

    class Layers(root, BaseSettings):  # type: ignore[valid-type, misc]
        """The root's fields as the sources see them; never instantiated (validation is the root's own)."""

        model_config = SettingsConfigDict(case_sensitive=True, env_prefix=ENV_PREFIX, env_nested_delimiter=NESTING)

    class YamlLayer(YamlConfigSettingsSource):
        """The config file as a mapping; a file that is no YAML mapping is a one-line ConfigError."""

        def __init__(self, path: Path) -> None:
            super().__init__(Layers, yaml_file=path)

        def _read_file(self, file_path: Any) -> dict[str, Any]:
            try:
                loaded = yaml.safe_load(file_path.read_text(encoding="utf-8"))
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" line {mark.line + 1}" if mark else ""
                raise ConfigError(f"{file_path}:{where}: not valid YAML") from None
            except UnicodeDecodeError:
                raise ConfigError(f"{file_path}: not UTF-8 text") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"{file_path}: the top level must be a mapping of keys")
            return loaded or {}

    class EnvLayer(EnvSettingsSource):
        """DRIFTLOOP_* variables as nested values, `__` between levels, names in any case.

        A scalar stays the string it is, for its field's type to parse: `2` is
        the string "2" for a string field and the integer 2 for an integer one
        (decoding every value as YAML first made `2` an integer, which a string
        field refused). A list, mapping or section is decoded as JSON, else as
        YAML (`[a, b]`). A variable that names no key, or a key below a plain
        value, is kept, so that validation calls it unknown or wrong.
        """

        def __init__(self, env: Mapping[str, str]) -> None:
            self.given = {k: v for k, v in env.items() if k.upper() not in reserved}
            super().__init__(Layers, case_sensitive=False)

        def _load_env_vars(self) -> Mapping[str, str | None]:
            return {k.lower(): v for k, v in self.given.items()}  # `env`, not os.environ

        def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
            try:
                return super().decode_complex_value(field_name, field, value)
            except ValueError:
                try:
                    return yaml.safe_load(value)
                except yaml.YAMLError:
                    name = next(
                        (
                            k
                            for k, v in self.given.items()
                            if v == value and k.upper().endswith(f"_{field_name.upper()}")
                        ),
                        field_name,
                    )
                    raise ConfigError(f"{name}: neither JSON nor YAML") from None

        def __call__(self) -> dict[str, Any]:
            data, prefix = super().__call__(), self.env_prefix.lower()
            for key, value in self.env_vars.items():  # names lower-cased, as case_sensitive=False reads them
                top, _, rest = key[len(prefix) :].partition(NESTING) if key.startswith(prefix) else ("", "", "")
                if top and (top not in Layers.model_fields or (rest and top not in data)):
                    data.setdefault(top, {rest: value} if rest else value)
            return data

    return YamlLayer, EnvLayer, functools.partial(InitSettingsSource, Layers)
