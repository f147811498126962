"""requirements-serve.lock (`make lock-serve`) pins, with sha256 hashes, every package that
pyproject's `serve` extra names, inside its range and at the version constraints.txt installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;[^\\]*)?\s*\\?$")


def lock() -> dict[str, tuple[Version, list[str]]]:
    """name -> (version, hashes) of requirements-serve.lock; every line must be an entry, a hash or a comment."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current: str | None = None
    for n, line in enumerate((ROOT / "requirements-serve.lock").read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if m := ENTRY.match(text):
            current = canonicalize_name(m.group(1))
            assert current not in pins, f"line {n}: {current} pinned twice"
            pins[current] = (Version(m.group(2)), [])
        elif m := re.fullmatch(r"--hash=sha256:([0-9a-f]{64})\s*\\?", text):
            assert current is not None, f"line {n}: a hash before any entry"
            pins[current][1].append(m.group(1))
        else:
            raise AssertionError(f"line {n}: not an entry, a hash or a comment: {line!r}")
    return pins


def test_the_lock_pins_every_serve_dependency_with_hashes():
    pins = lock()
    serve = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    assert serve, "pyproject names no serve dependencies"
    for spec in serve:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject serve) is not in requirements-serve.lock: run make lock-serve"
        assert req.specifier.contains(pins[name][0], prereleases=True), f"{name} {pins[name][0]} outside {spec}"
    for name, (_, hashes) in pins.items():
        assert hashes, f"{name}: no hash"


def test_the_lock_agrees_with_constraints():
    pins = lock()
    constraints = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            constraints[canonicalize_name(name)] = Version(version.split(";")[0].strip())
    stale = {n: (str(v), str(constraints[n])) for n, (v, _) in pins.items() if n in constraints and constraints[n] != v}
    assert not stale, f"lock vs constraints.txt differ (run make lock-serve): {stale}"
