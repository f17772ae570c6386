"""SECURITY.md states the limits the code enforces: each constant's value is written beside its name."""

from pathlib import Path

import pytest

from gpunet.apps import preprocess
from gpunet.errors import MAX_SHOWN
from gpunet.files import STALE_TMP_SECONDS
from gpunet.runs import config, store, sweep

DOC = " ".join((Path(__file__).resolve().parent.parent / "SECURITY.md").read_text().split())  # lines joined


def serve_limits():
    serve = pytest.importorskip("gpunet.apps.serve", reason="the serve extra is not installed")
    return [
        ("MAX_BODY", f"{serve.MAX_BODY // 1_000_000} MB"),
        ("BODY_TIMEOUT", f"{serve.BODY_TIMEOUT:g} s"),
        ("MAX_DECODES", f"at most {serve.MAX_DECODES} requests at once"),
        ("MAX_CONNECTIONS", f"At most {serve.MAX_CONNECTIONS} open connections"),
        ("CAP_HEADER_TIMEOUT", f"after {serve.CAP_HEADER_TIMEOUT:g} s"),
        ("HEADER_TIMEOUT", f"{serve.HEADER_TIMEOUT:g} s to send"),
        ("KEEP_ALIVE", f"{serve.KEEP_ALIVE} s keep-alive"),
        ("MAX_HEAD", f"{serve.MAX_HEAD:,} bytes"),
    ]


LIMITS = [
    ("MAX_PIXELS", f"{preprocess.MAX_PIXELS:,} pixels"),
    ("MAX_FILE", f"{preprocess.MAX_FILE // 1_000_000} MB"),
    ("MAX_CONFIG_BYTES", f"{config.MAX_CONFIG_BYTES // 1_000_000} MB"),
    ("MAX_METRICS", f"{(store.MAX_METRICS - 1_000_000) // config.MAX_EPOCHS} bytes per epoch plus 1 MB"),
    ("MAX_PARAMETERS", f"{store.MAX_PARAMETERS // 1_000_000} million parameters"),
    ("MAX_EPOCHS", f"{config.MAX_EPOCHS:,} epochs"),
    ("MAX_META", f"{store.MAX_META:,} characters"),
    ("MAX_POINTS", f"{config.MAX_POINTS:,} points"),
    ("MAX_NAME", f"at most {sweep.MAX_NAME} characters"),
    ("STALE_TMP_SECONDS", {3600: "for an hour"}[STALE_TMP_SECONDS]),
    ("MAX_SHOWN", f"{MAX_SHOWN} characters"),
]


@pytest.mark.parametrize("name, text", LIMITS, ids=[n for n, _ in LIMITS])
def test_each_limit_is_stated_beside_its_name(name, text):
    at = DOC.index(f"`{name}`")
    assert text in DOC[max(0, at - 80):at], (name, text)


def test_each_limit_of_serve_is_stated_beside_its_name():
    for name, text in serve_limits():
        at = DOC.index(f"`{name}`")
        assert text in DOC[max(0, at - 80):at], (name, text)


def test_the_number_budgets_are_stated():
    assert f"holds at most {store.BUDGETS['model']:,} numbers" in DOC
    assert f"a `checkpoint.npz` at most {store.BUDGETS['checkpoint']:,}" in DOC
