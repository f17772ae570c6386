"""How gpunet was installed, so hints to add an extra name the command that fits: `pip install -e '.[cuda12]'`
in an editable clone, `pip install 'gpunet[cuda12]'` for an installed package (a wheel, pipx, an index)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

CLONE = Path(__file__).resolve().parent.parent


def editable() -> bool:
    """True when gpunet runs from a clone: installed with `pip install -e`, or not installed at all (run with
    `python -m gpunet` from the repository); False for a wheel or sdist install (its direct_url.json, PEP 610,
    says whether an install is editable)."""
    try:
        direct_url = metadata.distribution("gpunet").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return (CLONE / "pyproject.toml").is_file()
    try:
        return bool(json.loads(direct_url or "{}").get("dir_info", {}).get("editable", False))
    except ValueError:
        return False


def pip_extra(extra: str) -> str:
    """The pip command that adds `extra` (e.g. 'cuda12', 'serve') to this install of gpunet."""
    return f"pip install -e '.[{extra}]'" if editable() else f"pip install 'gpunet[{extra}]'"
