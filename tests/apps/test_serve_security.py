"""`gpunet serve` against hostile clients: Host and Origin checks, media types, HEAD, busy and broken requests,
timeouts, and a real uvicorn server that keeps answering while slow clients hold connections."""

import http.client
import io
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from gpunet.apps import serve as serve_module  # noqa: E402
from gpunet.core.backend import get_backend  # noqa: E402
from gpunet.core.model import MLP  # noqa: E402
from gpunet.apps.serve import Gate, create_app, describe_model, listen, server_config  # noqa: E402

CLASSES = [str(d) for d in range(10)]
ANSWER_WITHIN = 5.0  # seconds: generous; an answer that waits for a decode or a slow client takes far longer


@pytest.fixture(scope="module")
def net():
    return MLP(get_backend("cpu"), (784, 16, 10), seed=0)


@pytest.fixture(scope="module")
def info(net):
    return describe_model(Path("/home/someone/secret-runs/model.npz"), net, {"dataset": "mnist", "classes": CLASSES})


def make_client(net, info, base_url="http://localhost", **kwargs):
    return TestClient(create_app(net, info, **kwargs), base_url=base_url)


@pytest.fixture(scope="module")
def client(net, info):
    with make_client(net, info) as c:
        yield c


def digit_png(size: int = 140) -> bytes:
    """A black 7-ish stroke on white paper, as PNG bytes."""
    image = Image.new("L", (size, size), 255)
    ImageDraw.Draw(image).line([(size // 5, size // 5), (4 * size // 5, size // 5), (size // 3, 4 * size // 5)],
                               fill=0, width=max(2, size // 12))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def post_png(client, **headers):
    return client.post("/api/predict", content=digit_png(), headers={"content-type": "image/png", **headers})


# Media types -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("media", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                   "image/gif", "image/svg+xml", "image/png-but-not-really"])
def test_other_media_types_get_415(client, media):
    headers = {} if media is None else {"content-type": media}
    r = client.post("/api/predict", content=digit_png(), headers=headers)
    assert r.status_code == 415
    assert "image/png" in r.json()["error"]


@pytest.mark.parametrize("media", ["image/png", "IMAGE/PNG", "Image/Png; charset=whatever", " image/png ;x=1"])
def test_media_types_are_read_case_insensitively(client, media):
    r = client.post("/api/predict", content=digit_png(), headers={"content-type": media})
    assert r.status_code == 200, r.text
    assert len(r.json()["probabilities"]) == 10


# Host and Origin ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST:1"])
def test_local_host_names_are_served(client, host):
    r = client.get("/api/model", headers={"host": host})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.",
                                  "192.168.1.2:8000", ""])
def test_other_host_names_are_refused(client, host):
    for r in (client.get("/api/model", headers={"host": host}), post_png(client, host=host)):
        assert r.status_code == 421
        assert "--allow-host" in r.json()["error"]


def test_allow_host_widens_the_names(net, info):
    with make_client(net, info, base_url="http://digits.lan:8000",
                     hosts=("localhost", "127.0.0.1", "::1", "digits.lan")) as c:
        assert c.get("/api/model").status_code == 200
        assert post_png(c).status_code == 200
        assert c.get("/api/model", headers={"host": "other.lan"}).status_code == 421


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost:3000", "https://localhost",
                                    "null", "http://127.0.0.1"])
def test_cross_origin_requests_are_refused(client, origin):
    r = post_png(client, host="localhost", origin=origin)
    assert r.status_code == 403
    assert "cross-origin" in r.json()["error"]
    assert client.get("/api/model", headers={"origin": origin}).status_code == 403


def test_same_origin_requests_are_served(client):
    r = post_png(client, host="localhost:8000", origin="http://localhost:8000", **{"sec-fetch-site": "same-origin"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_cross_site_fetch_metadata_is_refused(client, site):
    r = client.get("/api/model", headers={"sec-fetch-site": site})
    assert r.status_code == 403 and "cross-site" in r.json()["error"]


# Routes, answers, errors -------------------------------------------------------------------------------------------

def test_head_works_where_get_does(client):
    for path in ("/", "/api/model", "/static/app.js"):
        get, head = client.get(path), client.head(path)
        assert get.status_code == head.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]


def test_model_description_names_no_path(client):
    r = client.get("/api/model")
    assert r.status_code == 200
    assert "model" not in r.json() and "secret-runs" not in r.text and "/home" not in r.text


def test_unknown_routes_and_methods_answer_json(client):
    missing, wrong = client.get("/api/nothing"), client.delete("/api/model")
    assert (missing.status_code, wrong.status_code) == (404, 405)
    assert "error" in missing.json() and "error" in wrong.json()


def test_busy_server_answers_503_with_retry_after(net, info):
    with make_client(net, info, max_decodes=0) as c:
        r = post_png(c)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "busy" in r.json()["error"]
        assert c.get("/api/model").status_code == 200


def test_a_bug_still_answers_json_and_the_next_request_works():
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["path"])
        if scope["path"] == "/boom":
            raise RuntimeError("a bug")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"fine"})

    c = TestClient(Gate(app, ["localhost"]), base_url="http://localhost")
    r = c.get("/boom")
    assert r.status_code == 500 and "internal error (RuntimeError)" in r.json()["error"]
    assert c.get("/ok").text == "fine"
    assert calls == ["/boom", "/ok"]


def test_network_output_that_is_not_finite_is_a_4xx(info):
    huge = MLP(get_backend("cpu"), (784, 16, 10), seed=0)
    huge.params["W1"][...] = 1e37  # the first layer overflows to inf, the second gives inf - inf = NaN
    with make_client(huge, info) as c:
        r = post_png(c)
        assert r.status_code == 400 and "not finite" in r.json()["error"]


# A real server --------------------------------------------------------------------------------------------------

@pytest.fixture()
def real_server(net, info, monkeypatch):
    """uvicorn with `gpunet serve`'s settings on 127.0.0.1, a port the OS picks, in a thread; short timeouts."""
    monkeypatch.setattr(serve_module, "BODY_TIMEOUT", 1.0)
    monkeypatch.setattr(serve_module, "HEADER_TIMEOUT", 1.0)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(server_config(create_app(net, info)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def timed_get_model(port: int) -> float:
    """Seconds GET /api/model took on a fresh connection (it must answer 200)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/api/model")
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["sizes"] == [784, 16, 10]
    conn.close()
    return time.perf_counter() - t0


def test_slow_clients_and_decodes_do_not_stall_the_server(real_server):
    port = real_server
    slow = []
    for _ in range(8):  # bodies that never finish, and a head that never finishes
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 100000\r\n\r\n\x89PNG")
        slow.append(s)
    loris = socket.create_connection(("127.0.0.1", port))
    loris.sendall(b"GET /api/model HTTP/1.1\r\nHost: loc")
    slow.append(loris)

    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 1000), dtype=np.uint8))
    buf = io.BytesIO()
    big.save(buf, format="PNG", compress_level=0)  # 1 MB of noise: the slowest thing a client can make us decode
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/api/predict", body=buf.getvalue()[:999_000], headers={"Content-Type": "image/png"})
            conn.getresponse().read()
            conn.close()

    workers = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        took = [timed_get_model(port) for _ in range(5)]
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
        for s in slow:
            s.close()
    assert max(took) < ANSWER_WITHIN, took


def test_a_body_that_never_arrives_gets_408_and_the_connection_closes(real_server):
    with socket.create_connection(("127.0.0.1", real_server), timeout=10) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 1000\r\n\r\n\x89PNG")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"took over" in answer


def test_a_silent_connection_is_closed(real_server):
    with socket.create_connection(("127.0.0.1", real_server), timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(1) == b""  # closed by the server, not by our timeout (which would raise)
        assert time.monotonic() - t0 < 10


def test_a_failed_request_keeps_the_connection(real_server):
    conn = http.client.HTTPConnection("127.0.0.1", real_server, timeout=30)
    answers = []
    for body, media in [(b"junk", "image/png"), (digit_png(), "image/png"), (b"[1,2", "application/json"),
                        (b"x", "text/plain"), (digit_png(), "image/png")]:
        conn.request("POST", "/api/predict", body=body, headers={"Content-Type": media})
        if not answers:
            sock = conn.sock
        r = conn.getresponse()
        answers.append((r.status, "error" in json.loads(r.read())))
        assert conn.sock is sock  # the same connection: never closed and reopened
    conn.close()
    assert answers == [(400, True), (200, False), (400, True), (415, True), (200, False)]


def test_a_wrong_host_over_http(real_server):
    conn = http.client.HTTPConnection("127.0.0.1", real_server, timeout=30)
    conn.request("GET", "/api/model", headers={"Host": "rebound.example:80"})
    r = conn.getresponse()
    assert r.status == 421 and "rebound.example" in json.loads(r.read())["error"]
    conn.close()


def read_answer(s: socket.socket, quiet: float = 1.0) -> tuple[bytes, bool]:
    """The bytes the server sends until it closes the connection or goes quiet for `quiet` seconds, and whether it
    closed."""
    s.settimeout(quiet)
    answer = b""
    try:
        while chunk := s.recv(65536):
            answer += chunk
    except socket.timeout:
        return answer, False
    except ConnectionResetError:
        pass
    return answer, True


def closed_within(s: socket.socket, seconds: float) -> bool:
    """Whether the server closes `s` within `seconds` while the client keeps sending a byte every 0.2 s."""
    deadline = time.monotonic() + seconds
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            s.sendall(b"x")
            if s.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


EARLY_ANSWERS = [  # requests answered before their body is read, each with a body that has not all arrived
    (b"PUT /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\nab", 405),
    (b"POST /api/model HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nab", 405),
    (b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
     b"Content-Length: 2000000\r\n\r\nab", 413),
    (b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nab",
     415),
    (b"POST /nowhere HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nab", 404),
    (b"POST /api/predict HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 1000\r\n\r\nab", 421),
]


@pytest.mark.parametrize("request_bytes, status", EARLY_ANSWERS, ids=["405-put", "405-post", "413", "415", "404", "421"])
def test_a_body_sent_a_byte_at_a_time_after_the_answer_cannot_hold_the_connection(real_server, request_bytes, status):
    with socket.create_connection(("127.0.0.1", real_server), timeout=10) as s:
        s.sendall(request_bytes)
        s.settimeout(10)
        answer = b""
        while not answer.endswith(b"}"):  # the whole JSON answer, which may come in two pieces
            answer += s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 %d" % status) and b'{"error":' in answer, answer
        assert closed_within(s, 8.0), "the connection was held open by one byte at a time"


def test_413_says_it_closes_the_connection_and_does(real_server):
    with socket.create_connection(("127.0.0.1", real_server), timeout=10) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 5000000\r\n\r\n" + b"x" * 1000)
        answer, closed = read_answer(s)
    assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower() and closed


@pytest.mark.parametrize("size", [17_000, 30_000, 60_000, 200_000])
def test_a_request_head_over_the_limit_gets_431_in_json(real_server, size):
    with socket.create_connection(("127.0.0.1", real_server), timeout=10) as s:
        try:
            s.sendall(b"GET /api/model HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * size + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer, closed = read_answer(s)
    assert closed
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431") and b'{"error":' in answer, answer[:200]


def test_a_request_head_within_the_limit_is_served(real_server):
    conn = http.client.HTTPConnection("127.0.0.1", real_server, timeout=30)
    conn.request("GET", "/api/model", headers={"X-Pad": "a" * (serve_module.MAX_HEAD - 200)})
    assert conn.getresponse().status == 200
    conn.close()


def test_connections_over_the_cap_get_a_json_503_and_far_over_it_are_closed_at_once(real_server, monkeypatch):
    monkeypatch.setattr(serve_module, "MAX_CONNECTIONS", 3)
    monkeypatch.setattr(serve_module, "HEADER_TIMEOUT", 60.0)  # so only the cap can close them
    held = [socket.create_connection(("127.0.0.1", real_server), timeout=10) for _ in range(3)]
    try:
        time.sleep(0.3)  # the server has accepted them all
        over = [socket.create_connection(("127.0.0.1", real_server), timeout=10) for _ in range(3)]
        held += over
        over[0].sendall(b"GET /api/model HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer, closed = read_answer(over[0])
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower() and closed
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("over 3 connections")
        t0 = time.monotonic()
        # Silent: closed after CAP_HEADER_TIMEOUT (1 s from connecting), not 60 s; waiting up to 5 s for it.
        assert read_answer(over[1], quiet=5.0) == (b"", True)
        assert time.monotonic() - t0 < 10
        far = [socket.create_connection(("127.0.0.1", real_server), timeout=10) for _ in range(6)]
        held += far
        time.sleep(0.3)
        assert read_answer(far[-1]) == (b"", True)  # beyond twice the cap: closed at once
        for s in held[:3]:
            s.close()
        time.sleep(serve_module.CAP_HEADER_TIMEOUT + 0.5)  # the silent ones over the cap are gone by now
        assert timed_get_model(real_server) < ANSWER_WITHIN  # the freed slots serve the next client
    finally:
        for s in held:
            s.close()


def test_bytes_that_are_not_http_get_a_json_400(real_server):
    with socket.create_connection(("127.0.0.1", real_server), timeout=10) as s:
        s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        answer, closed = read_answer(s)
    assert answer.startswith(b"HTTP/1.1 400") and closed
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": "not a valid HTTP/1.1 request"}


@pytest.mark.parametrize("pixels", [
    ["0.5"] * 784, [True] * 784, [False] * 784, [[True] * 28] * 28, [["0"] * 28] * 28, [0.5] * 783 + ["0.5"],
    [0.5] * 783 + [None], [[0.5] * 27 + [True]] + [[0.5] * 28] * 27, [{"a": 1}] * 784, "0.5" * 784,
], ids=["strings", "true", "false", "true-28x28", "strings-28x28", "one-string", "one-null", "one-bool-28x28",
        "objects", "a-string"])
def test_pixels_must_be_json_numbers(client, pixels):
    for body in (pixels, {"pixels": pixels}):
        r = client.post("/api/predict", content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == 422 and "numbers" in r.json()["error"], r.text


def test_pixels_as_json_integers_and_floats_are_accepted(client):
    grey = np.zeros((28, 28))
    grey[6:22, 12:16] = 1
    rows = [[int(v) if v in (0, 1) and i % 2 else float(v) for v in row] for i, row in enumerate(grey)]
    r = client.post("/api/predict", content=json.dumps(rows), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
