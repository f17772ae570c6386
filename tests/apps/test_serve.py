"""`gpunet serve`: the JSON API through FastAPI's test client, the command, and the page in a real Chromium."""

import io
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402  (Starlette's client needs httpx2, in the test extra)
from PIL import Image  # noqa: E402

from gpunet.core.backend import get_backend  # noqa: E402
from gpunet.apps.preprocess import to_mnist  # noqa: E402
from gpunet.apps.serve import MAX_BODY, create_app, describe_model, find_model  # noqa: E402
from gpunet.runs.store import load_model  # noqa: E402
from helpers import cli  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000  # generous: the page answers in well under a second, CI machines are slow and shared


@pytest.fixture(scope="module")
def client(trained_run):
    net, header = load_model(trained_run / "model.npz", get_backend("cpu"))
    with TestClient(create_app(net, describe_model(trained_run / "model.npz", net, header)),
                    base_url="http://localhost") as c:  # the Host the server answers to by default
        yield c


@pytest.fixture(scope="module")
def net(trained_run):
    return load_model(trained_run / "model.npz", get_backend("cpu"))[0]


@pytest.fixture(scope="module")
def test_digits(mnist):
    split = mnist[1]
    return split.images[:5], split.labels[:5]  # (5, 28, 28) uint8, (5,)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def ink_on_paper(digit: np.ndarray) -> Image.Image:
    """An MNIST digit (28, 28) uint8 as a 280x280 drawing: black ink on white, like the page sends."""
    return Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR)


def expected(net, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """What the API must answer for `image`: the preprocessed 28x28 and the net's probabilities on it."""
    x = to_mnist(image)
    return x, net.predict_proba(x.reshape(1, -1))[0]


# The API ---------------------------------------------------------------------------------------------------------

def test_model_description(client, trained_run):
    info = client.get("/api/model").json()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert info["sizes"] == [784, 128, 10]
    assert info["dataset"] == "mnist" and info["classes"] == [str(d) for d in range(10)]
    assert info["test_accuracy"] == metrics["test_accuracy"] > 0.9
    assert info["epochs"] == 3 and info["parameters"] == 784 * 128 + 128 + 128 * 10 + 10


def test_predict_png(client, net, test_digits):
    for digit, label in zip(*test_digits):
        image = ink_on_paper(digit)
        r = client.post("/api/predict", content=png_bytes(image), headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        answer = r.json()
        x, proba = expected(net, image)
        np.testing.assert_allclose(answer["image"], x, atol=1e-3)
        np.testing.assert_allclose(answer["probabilities"], proba, atol=1e-5)
        assert answer["top"] == int(proba.argmax()) == label  # the first five test digits, all right


@pytest.mark.parametrize("form", ["nested", "flat", "object"])
def test_predict_array(client, net, test_digits, form):
    digit, label = test_digits[0][0], test_digits[1][0]
    grey = digit / 255.0  # (28, 28) in [0, 1], light ink on black like MNIST
    body = {"nested": grey.tolist(), "flat": grey.reshape(-1).tolist(), "object": {"pixels": grey.tolist()}}[form]
    r = client.post("/api/predict", json=body)
    assert r.status_code == 200, r.text
    x, proba = expected(net, Image.fromarray(grey.astype(np.float32)))
    np.testing.assert_allclose(r.json()["image"], x, atol=1e-3)
    np.testing.assert_allclose(r.json()["probabilities"], proba, atol=1e-5)
    assert r.json()["top"] == label


def post_json_text(client, text: str):
    return client.post("/api/predict", content=text.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("send, status, says", [
    (lambda c: c.post("/api/predict", content=b"hello, not a picture", headers={"content-type": "image/png"}),
     400, "not a PNG or JPEG"),
    (lambda c: c.post("/api/predict", content=png_bytes(Image.new("L", (50, 50), 255)),
                      headers={"content-type": "image/png"}), 400, "no digit"),
    (lambda c: c.post("/api/predict", content=b"", headers={"content-type": "image/png"}), 400, "empty body"),
    (lambda c: c.post("/api/predict", content=b"\x89PNG" + bytes(MAX_BODY), headers={"content-type": "image/png"}),
     413, "over 1 MB"),
    (lambda c: post_json_text(c, "[[0.5, 0.5"), 400, "not valid JSON"),
    (lambda c: c.post("/api/predict", json={"pictures": []}), 422, '"pixels"'),
    (lambda c: c.post("/api/predict", json=[[0.5] * 28] * 27), 422, "shape [27, 28]"),
    (lambda c: c.post("/api/predict", json=[0.5] * 785), 422, "shape [785]"),
    (lambda c: c.post("/api/predict", json=[[0.5] * 28] * 27 + [[0.5] * 27]), 422, "nested list"),
    (lambda c: c.post("/api/predict", json=[["white"] * 28] * 28), 422, "nested list"),
    (lambda c: c.post("/api/predict", json=[1.5] + [0.0] * 783), 422, "[0, 1]"),
    (lambda c: c.post("/api/predict", json=[-0.1] + [0.0] * 783), 422, "[0, 1]"),
    (lambda c: post_json_text(c, json.dumps([math.nan] + [0.0] * 783)), 422, "[0, 1]"),
    (lambda c: c.post("/api/predict", json=[0.0] * 784), 422, "no digit"),
    (lambda c: post_json_text(c, "[1" + "0" * 400 + "]"), 422, "nested list"),
    (lambda c: post_json_text(c, "[" * 100_000 + "]" * 100_000), 400, "nested too deeply"),
], ids=["not-an-image", "blank-image", "empty", "over-1MB", "bad-json", "no-pixels", "27x28", "785",
        "ragged", "strings", "above-1", "below-0", "nan", "blank-array", "huge-integer", "deep-nesting"])
def test_bad_requests_get_4xx_json_and_serving_goes_on(client, test_digits, send, status, says):
    r = send(client)
    assert r.status_code == status
    assert says in r.json()["error"]
    good = client.post("/api/predict", json=(test_digits[0][0] / 255.0).tolist())
    assert good.status_code == 200


def test_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset
    assert "http" not in page.text.replace('name="viewport"', "")  # nothing fetched from elsewhere


# The command ------------------------------------------------------------------------------------------------------

def test_newest_run_is_chosen(tmp_path):
    runs = tmp_path / "runs"
    for name, mtime in [("b", 1_000), ("a", 2_000), ("c", 1_500)]:
        (runs / name).mkdir(parents=True)
        (runs / name / "model.npz").write_bytes(b"")
        os.utime(runs / name / "model.npz", (mtime, mtime))
    (runs / "unfinished").mkdir()  # no model.npz: skipped
    assert find_model(None, runs) == (runs / "a" / "model.npz", True)
    assert find_model(runs / "c", runs) == (runs / "c", False)  # load_model takes a run directory too


def test_no_model_says_how_to_train(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("serve")
    assert result.exit_code == 2
    assert "gpunet train" in result.output and "Traceback" not in result.output


def test_damaged_model_is_refused(tmp_path):
    (tmp_path / "model.npz").write_bytes(b"not a zip")
    result = cli("serve", tmp_path / "model.npz")
    assert result.exit_code == 2 and "model.npz" in result.output


def test_port_in_use_is_one_line(trained_run):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cli("serve", trained_run, "--port", port)
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output and "--port" in result.output


def test_missing_extra_says_how_to_install(trained_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes `import fastapi` fail
    monkeypatch.delitem(sys.modules, "gpunet.apps.serve")
    result = cli("serve", trained_run)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: gpunet serve needs FastAPI and uvicorn (fastapi is missing): pip install -e '.[serve]'"]


# A real server, and the page in Chromium ----------------------------------------------------------------------------

class Server:
    def __init__(self, proc: subprocess.Popen, url: str, said: list[str]):
        self.proc, self.url, self.said = proc, url, said

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=WAIT_MS / 1000) as r:
            return r.read()


@pytest.fixture(scope="module")
def server(trained_run):
    """`gpunet serve` with no MODEL, run from the folder holding runs/, on a port the OS picks (--port 0)."""
    cmd = [sys.executable, "-m", "gpunet", "serve", "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(cmd, cwd=trained_run.parent.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    said, url = [], None
    try:
        while url is None:
            try:
                said.append(lines.get(timeout=WAIT_MS / 1000))
            except queue.Empty:
                pytest.fail(f"gpunet serve printed no address; it said: {said}")
            match = re.search(r"at (http://127\.0\.0\.1:\d+/)", said[-1])
            url = match and match.group(1)
        yield Server(proc, url, said)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_server_answers_over_http(server, trained_run):
    assert "using the newest run" in server.said[0] and str(Path("runs") / trained_run.name) in server.said[0]
    assert json.loads(server.get("/api/model"))["sizes"] == [784, 128, 10]
    request = urllib.request.Request(server.url + "api/predict", data=b"junk", method="POST",
                                     headers={"content-type": "image/png"})
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(request, timeout=WAIT_MS / 1000)
    assert bad.value.code == 400 and "error" in json.loads(bad.value.read())
    assert b"<canvas" in server.get("/")  # still serving after the bad request


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is not installed: pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


# Strokes in fractions of the canvas: a "1" is a slightly slanted bar, a "0" an upright ellipse.
ONE = [[(0.54, 0.18), (0.50, 0.50), (0.46, 0.82)]]
ZERO = [[(0.5 + 0.22 * math.sin(t), 0.5 - 0.32 * math.cos(t)) for t in np.linspace(0, 2 * math.pi, 41)]]


def draw_with_mouse(page, strokes):
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(x, y, steps=5)
        page.mouse.up()


def draw_with_finger(page, strokes):
    """Real touch events through the DevTools protocol (Playwright's touchscreen can only tap)."""
    cdp = page.context.new_cdp_session(page)
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [{"x": box["x"] + fx * box["width"], "y": box["y"] + fy * box["height"]} for fx, fy in stroke]
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [points[0]]})
        for a, b in zip(points, points[1:]):
            for t in (0.25, 0.5, 0.75, 1.0):
                p = {"x": a["x"] + t * (b["x"] - a["x"]), "y": a["y"] + t * (b["y"] - a["y"])}
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [p]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def shows(page, digit: str) -> None:
    """Wait until the answer for the whole drawing is in, then check it is `digit`, with its bar and 28x28."""
    from playwright.sync_api import expect

    expect(page.locator(".result")).not_to_have_class(re.compile("stale"), timeout=WAIT_MS)
    expect(page.locator("#top")).to_have_text(digit, timeout=WAIT_MS)
    expect(page.locator("#bars li.best .digit")).to_have_text(digit)
    fill, track = (page.locator(f"#bars li.best {part}").bounding_box()["width"] for part in (".fill", ".track"))
    shown = float(page.locator("#bars li.best .pct").inner_text().rstrip("%"))
    assert fill / track == pytest.approx(shown / 100, abs=0.02)  # the bar is as long as its label says
    ink = page.evaluate("""() => {
        const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
        let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s / 255; }""")
    assert ink > 20  # the enlarged 28x28 input holds the drawn stroke


def test_draw_a_one_and_a_zero(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 900, "height": 640})
    page.goto(server.url)
    from playwright.sync_api import expect

    expect(page.locator("#model")).to_contain_text("784-128-10 trained on mnist for 3 epochs", timeout=WAIT_MS)
    draw_with_mouse(page, ONE)
    shows(page, "1")
    page.screenshot(path=tmp_path / "serve-one.png")
    page.click("#clear")
    expect(page.locator("#top")).to_have_text("–")
    draw_with_mouse(page, ZERO)
    shows(page, "0")
    page.screenshot(path=tmp_path / "serve-zero.png")
    page.close()


def test_phone_viewport_and_finger(server, browser, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=3,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server.url)
    pad, result = page.locator("#pad").bounding_box(), page.locator(".result").bounding_box()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    assert 300 <= pad["width"] == pad["height"] and pad["x"] >= 0 and pad["x"] + pad["width"] <= 390
    assert result["y"] >= pad["y"] + pad["height"]  # the bars stack below the canvas
    draw_with_finger(page, ONE)
    shows(page, "1")
    assert page.evaluate("window.scrollY") == 0  # drawing did not scroll the page
    page.screenshot(path=tmp_path / "serve-phone.png", full_page=True)
    context.close()


class OutOfMemoryError(MemoryError):
    """As cupy.cuda.memory.OutOfMemoryError: a MemoryError subclass."""


def test_a_device_failure_is_a_503_not_the_inputs_fault(trained_run, standin, monkeypatch):
    """On cuda: the kernels run once when the app is made (not in the first request's thread), and the device
    running out of memory is a 503 JSON line, not a 400 "cannot use this input"."""
    net, header = load_model(trained_run / "model.npz", get_backend("cuda"))
    app = create_app(net, describe_model(trained_run / "model.npz", net, header))
    assert standin.ledger.gets == 1  # the warm-up's forward pass
    with TestClient(app, base_url="http://localhost") as c:
        drawn = {"content": png_bytes(ink_on_paper(np.eye(28, dtype=np.uint8) * 255)),
                 "headers": {"content-type": "image/png"}}
        assert c.post("/api/predict", **drawn).status_code == 200

        def out_of_memory(*args, **kwargs):
            raise OutOfMemoryError("Out of memory allocating 512 bytes (allocated so far: 16 GiB).")

        monkeypatch.setattr(standin.cublas, "gemm", out_of_memory)
        r = c.post("/api/predict", **drawn)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json() == {"error": "the cuda device failed (OutOfMemoryError: Out of memory allocating 512 bytes "
                                 "(allocated so far: 16 GiB).); retry later"}
