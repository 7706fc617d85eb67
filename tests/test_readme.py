"""The README stays an entry point: short, the pipeline near the top, and every link to a topic page alive.

Detailed documentation lives in docs/; the README links to it. These checks read the files only
(no training, no imports of autoseg).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

#: The README's longest allowed length: what a newcomer reads before the topic pages.
MAX_README_LINES = 200
#: The pipeline's commands must appear within this many lines of the top.
PIPELINE_WITHIN_LINES = 60
PIPELINE_COMMANDS = ["autoseg plan", "autoseg train", "autoseg ensemble", "autoseg predict"]

#: A Markdown link target ending in .md (an optional #anchor after it), not a URL.
MD_LINK = re.compile(r"\]\(([^)\s#]+\.md)(#[^)\s]*)?\)")


def _markdown_pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_readme_is_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines, at most {MAX_README_LINES}: move detail to a page under docs/")


@pytest.mark.parametrize("command", PIPELINE_COMMANDS)
def test_pipeline_commands_are_near_the_top(command):
    head = "\n".join(README.read_text(encoding="utf-8").splitlines()[:PIPELINE_WITHIN_LINES])
    assert command in head, f"README.md: {command!r} not within its first {PIPELINE_WITHIN_LINES} lines"


def test_readme_links_to_docs_pages():
    targets = [m.group(1) for m in MD_LINK.finditer(README.read_text(encoding="utf-8"))]
    assert any(t.startswith("docs/") for t in targets), "README.md links to no page under docs/"


@pytest.mark.parametrize("page", _markdown_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_point_to_existing_files(page):
    missing = []
    for match in MD_LINK.finditer(page.read_text(encoding="utf-8")):
        target = match.group(1)
        if "://" in target:
            continue
        if not (page.parent / target).resolve().is_file():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)}: links to missing files {missing}"


def test_readme_keeps_the_ci_test_command():
    """.ci/run runs the README's test command after the setup step; the two must stay the same."""
    readme = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = ".venv/bin/python -m pytest -q"
    assert f"./scripts/setup.sh && {command}" in readme
    assert command in ci
