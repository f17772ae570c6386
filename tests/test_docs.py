"""The docs site's sources: mkdocs.yml's nav names every page in docs/ and nothing missing, the API reference
covers each module of the public API, and the pages included from the root exist. CI builds the site itself
(`mkdocs build --strict`, in a venv with the docs extra)."""

import re
from pathlib import Path

import pytest

import gpunet

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
pytestmark = pytest.mark.skipif(not (ROOT / "mkdocs.yml").is_file(), reason="no docs sources here (an sdist)")


def nav_files() -> list[str]:
    """The files of mkdocs.yml's nav, in order (lines `  - Title: file`)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:\n"):].split("\n\n")[0]
    return re.findall(r"^\s+- [^:\n]+: (\S+)$", nav, flags=re.M)


def test_the_nav_names_every_page_and_each_one_exists():
    files = nav_files()
    assert files[0] == "index.md" and "api.md" in files and "walkthrough.ipynb" in files
    assert all((DOCS / f).is_file() for f in files), [f for f in files if not (DOCS / f).is_file()]
    assert {p.name for p in DOCS.glob("*.md")} == {f for f in files if f.endswith(".md")}
    assert (DOCS / "walkthrough.ipynb").resolve() == ROOT / "notebooks" / "walkthrough.ipynb"


def test_the_api_reference_covers_the_public_api():
    documented = set(re.findall(r"^::: (\S+)$", (DOCS / "api.md").read_text(), flags=re.M))
    assert set(gpunet.PUBLIC.values()) <= documented, set(gpunet.PUBLIC.values()) - documented


def test_included_pages_exist():
    for page in DOCS.glob("*.md"):
        for included in re.findall(r'^--8<-- "([^"]+)"$', page.read_text(), flags=re.M):
            assert (ROOT / included).is_file(), (page.name, included)
    assert "SECURITY.md" in (DOCS / "security.md").read_text()
