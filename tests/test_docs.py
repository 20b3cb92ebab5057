"""The documentation holds together: every relative link resolves (file and heading), the
README stays a page a newcomer reads, and nothing points outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def tracked(pattern: str) -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in names]


def anchors(path: Path) -> set[str]:
    """GitHub's anchor of every heading of a Markdown file."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


MARKDOWN = tracked("*.md")


@pytest.mark.parametrize("path", MARKDOWN, ids=[str(p.relative_to(ROOT)) for p in MARKDOWN])
def test_every_relative_link_resolves(path: Path) -> None:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        assert resolved.exists(), f"{path.name}: {target} does not exist"
        assert resolved.is_relative_to(ROOT), f"{path.name}: {target} leaves the repository"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{path.name}: no heading #{anchor}"


def test_the_readme_is_short_and_the_design_is_the_repositorys_own() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    for needed in ("make demo", "make test", "docs/design.md", "Where to change what"):
        assert needed in readme
    for document in ("design", "operations", "api", "benchmarks", "testing"):
        assert (ROOT / "docs" / f"{document}.md").exists()
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert (ROOT / "CHANGELOG.md").exists()


def test_nothing_points_outside_the_repository() -> None:
    # the shared folder beside the checkout, this machine's work tree, the old design file
    machine = "/" + "work" + "/"
    outside = re.compile(r"\.\./shared|" + re.escape(machine) + r"|DESIGN\.md")
    offenders = [
        str(path.relative_to(ROOT))
        for path in tracked("*")
        if path.is_file()
        and path.suffix in {".md", ".py", ".toml", ".yaml", ".yml", ".lua", ".json", ".txt"}
        and path.name != "test_docs.py"
        and outside.search(path.read_text(encoding="utf-8", errors="ignore"))
    ]
    assert offenders == []
