"""How gpunet was installed, so hints to add an extra name the command that fits: `pip install -e '.[cuda12]'`
in a clone, `pip install 'gpunet[cuda12]'` for an installed package (a wheel, pipx, an index)."""

from __future__ import annotations

from pathlib import Path

CLONE = Path(__file__).resolve().parent.parent  # the repository root when gpunet runs from its clone


def in_clone() -> bool:
    """True when this code runs from a clone (an editable install, or `python -m gpunet` in the repository): the
    folder above the package holds pyproject.toml. An installed package's folder above is site-packages."""
    return (CLONE / "pyproject.toml").is_file()


def pip_extra(extra: str) -> str:
    """The pip command that adds `extra` (e.g. 'cuda12', 'serve') to this install of gpunet."""
    return f"pip install -e '.[{extra}]'" if in_clone() else f"pip install 'gpunet[{extra}]'"
