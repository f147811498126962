"""The documentation site (mkdocs.yml, docs/) builds without a warning, and the README's links resolve.

`mkdocs build --strict` turns every warning into a failure: a page missing from
the explicit nav, a link to a page or an anchor that does not exist. The CLI
reference page is generated from the parser and must be in step with it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_mkdocs_site_builds_strict_without_warnings(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is not installed (it is in the dev extra: pip install -e '.[dev]')")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    warnings = [line for line in out.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    assert (site / "index.html").is_file()
    assert (site / "reference" / "configuration.html").is_file()


def test_cli_reference_matches_the_parser():
    from driftloop.app.cli_doc import END, PAGE, START, reference_markdown

    page = PAGE.read_text(encoding="utf-8")
    assert START in page and END in page, f"{PAGE}: the markers are missing"
    documented = page.split(START, 1)[1].split(END, 1)[0].strip()
    assert documented == reference_markdown(), "run: python -m driftloop.app.cli_doc --write"


def test_readme_links_resolve_and_keep_its_two_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links into docs/"
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


@pytest.mark.parametrize("phrase", ["this machine", "session", "Issue 3", ".pytest_cache", "../shared"])
def test_docs_read_as_product_documentation(phrase):
    """No lab notes in the docs: nothing about who measured what when, or paths into local scratch folders."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    hits = [str(p.relative_to(REPO)) for p in pages if phrase.lower() in p.read_text(encoding="utf-8").lower()]
    assert not hits, f"{phrase!r} in {hits}"
