"""How gpunet was installed, so hints to add an extra name the command that fits: `pip install -e '.[cuda12]'`
in a clone, `pipx inject gpunet ...` under pipx, `pip install 'gpunet[cuda12]'` for another installed package
(a wheel, an index)."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

CLONE = Path(__file__).resolve().parent.parent  # the repository root when gpunet runs from its clone


def in_clone() -> bool:
    """True when this code runs from a clone (an editable install, or `python -m gpunet` in the repository): the
    folder above the package holds pyproject.toml. An installed package's folder above is site-packages."""
    return (CLONE / "pyproject.toml").is_file()


def under_pipx() -> bool:
    """True when gpunet runs in a venv that pipx made (pipx keeps them in .../pipx/venvs/NAME)."""
    prefix = Path(sys.prefix)
    return prefix.parent.name == "venvs" and "pipx" in prefix.parts


def extra_requirements(extra: str) -> list[str]:
    """The requirements `extra` adds, from the installed metadata, e.g. ['fastapi>=0.110', 'uvicorn>=0.29']."""
    marker = f'extra == "{extra}"'
    return [r.split(";")[0].strip() for r in metadata.requires("gpunet") or [] if marker in r.replace("'", '"')]


def pip_extra(extra: str) -> str:
    """The command that adds `extra` (e.g. 'cuda12', 'serve') to this install of gpunet."""
    if in_clone():
        return f"pip install -e '.[{extra}]'"
    if under_pipx():
        return "pipx inject gpunet " + " ".join(f"'{r}'" for r in extra_requirements(extra))
    return f"pip install 'gpunet[{extra}]'"
