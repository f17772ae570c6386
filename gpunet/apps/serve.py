"""`gpunet serve`: a page to draw a digit on, and a small JSON API, for one trained model (FastAPI + uvicorn).

    GET  /             the drawing page (gpunet/apps/static/, plain HTML/CSS/JS, nothing fetched from elsewhere)
    GET  /api/model    sizes, dataset, class names, test accuracy and epochs of the loaded model
    POST /api/predict  a PNG or JPEG of a digit (image/png, image/jpeg), or JSON grey values (application/json),
                       28x28 or 784 of them, in [0, 1]
                       -> {"top": k, "probabilities": [10], "image": 28x28 the network saw}
    (HEAD works wherever GET does.)

Both kinds of input go through `gpunet.apps.preprocess.to_mnist`, the preprocessing of `gpunet predict`.
A bad request gets a 4xx status and {"error": "..."}; the server keeps serving, on the same connection (but
413, 408 and 431 close it, and so does a body left unread for HEADER_TIMEOUT after its answer).

Every request is treated as hostile, since any web page the user opens can send requests to 127.0.0.1:
the Host header must name this server (the address it is bound to, or localhost, or an --allow-host name:
no DNS rebinding), a cross-origin request is refused (403), only the three media types above are accepted
(415; so no "simple" cross-origin POST), images are decoded in worker threads, at most MAX_DECODES at once
(503 with Retry-After beyond), and uvicorn runs with header, body and keep-alive timeouts and a cap on
connections (see `serve`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any, Iterable

import anyio.to_thread
import h11
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from gpunet.core.backend import Backend
from gpunet.errors import GpunetError
from gpunet.runs.evaluate import probabilities
from gpunet.core.model import MLP
from gpunet.apps.preprocess import SIZE, decode_image, image_input
from gpunet.runs.store import load_model

STATIC = Path(__file__).parent / "static"
MAX_BODY = 1_000_000  # bytes; a 280x280 drawing as PNG is a few kB
MEDIA_TYPES = ("image/png", "image/jpeg", "application/json")  # what POST /api/predict accepts
MAX_DECODES = 2  # requests decoded and classified at once (in threads); more are answered 503
BODY_TIMEOUT = 10.0  # seconds to receive a whole request body (408 after)
HEADER_TIMEOUT = 10.0  # seconds to receive a request's headers once connected or after an answer (then closed)
KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open
MAX_CONNECTIONS = 64  # open connections; more get 503 (JSON), and beyond twice as many are closed at once
CAP_HEADER_TIMEOUT = 1.0  # seconds a connection over MAX_CONNECTIONS has to send its request's headers
MAX_HEAD = 16_384  # bytes of a request line and headers (431 beyond)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")  # Host names always allowed


class BadRequest(Exception):
    """A request answered with `status` and {"error": message} (and `headers`): one the client must fix (4xx), or
    one the device failed (503)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


def find_model(model: Path | None, runs: Path = Path("runs")) -> tuple[Path, bool]:
    """MODEL (a model.npz or a run directory), or else the newest runs/*/model.npz -> (path, whether newest)."""
    if model is not None:
        return Path(model), False
    found = sorted(runs.glob("*/model.npz"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if not found:
        raise GpunetError(f"no trained model under {runs}/: train one with `gpunet train`, "
                          "or pass MODEL (a model.npz or a run directory)")
    return found[-1], True


def describe_model(path: Path, net: MLP, header: dict[str, Any]) -> dict[str, Any]:
    """What GET /api/model answers, from the model file's header (train writes its final test metrics there).
    It names no file or folder: the page needs none, and a path on disk is nobody else's business."""
    return {
        "sizes": list(net.sizes),
        "parameters": int(sum(int(np.prod(v.shape)) for v in net.params.values())),
        "dataset": header["dataset"],
        "classes": header["classes"],
        "test_accuracy": header.get("test_accuracy"),
        "epochs": header.get("epochs"),
        "gpunet": header.get("gpunet"),
        "device": net.backend.name,
    }


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 once it passes MAX_BODY bytes (whatever Content-Length claims)."""
    too_big = BadRequest(413, f"request body over {MAX_BODY // 1_000_000} MB; send a smaller image",
                         {"connection": "close"})
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def grey_from_json(body: bytes) -> Image.Image:
    """JSON `[...]` or `{"pixels": [...]}`: 28x28 or 784 grey values in [0, 1] -> a float ("F") image. Only JSON
    numbers count as pixels (a string or a boolean is refused, never converted)."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise BadRequest(400, "body is JSON nested too deeply") from None
    except ValueError as e:
        raise BadRequest(400, f"body is not valid JSON ({str(e)[:200]})") from None
    if isinstance(data, dict):
        if "pixels" not in data:
            raise BadRequest(422, 'JSON object has no "pixels": send {"pixels": 28x28 or 784 numbers in [0, 1]}')
        data = data["pixels"]
    rows = data if isinstance(data, list) and data and all(isinstance(r, list) for r in data) else [data]
    if not all(isinstance(r, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
               for r in rows):
        raise BadRequest(422, "pixels must be numbers in a 28x28 nested list or a flat list of 784") from None
    try:
        grey = np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):  # ragged rows, or an integer too big for a float
        raise BadRequest(422, "pixels must be numbers in a 28x28 nested list or a flat list of 784") from None
    if grey.shape not in ((SIZE, SIZE), (SIZE * SIZE,)):
        raise BadRequest(422, f"pixels have shape {list(grey.shape)}; send 28x28 or 784 values")
    if not np.all(np.isfinite(grey)) or grey.min() < 0 or grey.max() > 1:
        raise BadRequest(422, "pixel values must lie in [0, 1] (0 black, 1 white)")
    return Image.fromarray(grey.reshape(SIZE, SIZE).astype(np.float32))


def host_name(host: str) -> str:
    """The name in a Host header, lowercased and without the port: "[::1]:8000" -> "::1"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.index("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def head_size(scope: dict) -> int:
    """Bytes of a request's line and headers as sent (less the spaces and line ends h11 dropped, at most 4 a line)."""
    line = len(scope["method"]) + len(scope["raw_path"]) + len(scope["query_string"]) + len(scope["http_version"]) + 14
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"]) + 2


def refusal(headers: Headers, hosts: frozenset[str], scheme: str = "http") -> tuple[int, str] | None:
    """Why a request with these headers is refused, whatever it asks for (None: it is not). Same-origin means
    the Origin header is exactly scheme://Host."""
    host = headers.get("host", "")
    if host_name(host) not in hosts:
        return 421, (f"Host {host[:100]!r} is not a name this server answers to "
                     "(start it with --allow-host NAME to serve another name)")
    origin = headers.get("origin")
    if origin is not None and origin.strip().lower() != f"{scheme}://{host.strip().lower()}":
        return 403, f"cross-origin requests are refused (Origin {origin[:100]!r}, Host {host[:100]!r})"
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return 403, f"cross-site requests are refused (Sec-Fetch-Site: {headers['sec-fetch-site'][:30]})"
    return None


class Gate:
    """ASGI middleware around the whole app: refuses a wrong Host or a cross-origin request before the app
    sees it, and turns anything that still escapes the app into a JSON answer on a connection kept open."""

    def __init__(self, app: Any, hosts: Iterable[str]):
        self.app, self.hosts = app, frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if head_size(scope) > MAX_HEAD:
            return await JSONResponse({"error": f"request line and headers over {MAX_HEAD:,} bytes"},
                                      status_code=431, headers={"connection": "close"})(scope, receive, send)
        refused = refusal(Headers(scope=scope), self.hosts, scope.get("scheme", "http"))
        if refused is not None:
            status, message = refused
            return await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
        started = False

        async def watch(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as e:  # noqa: BLE001  a bug in gpunet: say so, keep serving, keep the connection
            logging.getLogger("gpunet.apps.serve").error("internal error on %s %s: %r", scope["method"], scope["path"], e)
            if not started:
                await JSONResponse({"error": f"internal error ({type(e).__name__}); please report it"},
                                   status_code=500)(scope, receive, send)


def answer(net: MLP, body: bytes, is_json: bool) -> dict[str, Any]:
    """The prediction for one request body (run in a worker thread); BadRequest for any failure of the input, and
    503 for a failure of the device (out of memory, a CUDA error), which is not the input's."""
    try:
        image = grey_from_json(body) if is_json else decode_image(body, "request body")
        x = image_input(image, "request body")  # (28, 28) in [0, 1]
    except BadRequest:
        raise
    except GpunetError as e:
        raise BadRequest(422 if is_json else 400, str(e)) from None
    except Exception as e:  # noqa: BLE001  hostile input: whatever fails, the client gets one line, not a 500
        raise BadRequest(422 if is_json else 400, f"cannot use this input ({type(e).__name__}: {e})") from None
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite output is reported below
            proba = probabilities(net, x.reshape(1, -1))[0]  # (k,)
    except Exception as e:  # noqa: BLE001  the device failed (CuPy's OutOfMemoryError, a CUDA error), not the input
        raise BadRequest(503, f"the {net.backend.name} device failed ({type(e).__name__}: {e}); retry later",
                         {"retry-after": "1"}) from None
    if not np.isfinite(proba).all():
        raise BadRequest(422 if is_json else 400, "the network's output is not finite for this input")
    return {"top": int(proba.argmax()), "probabilities": [round(float(p), 6) for p in proba],
            "image": np.round(x, 3).tolist()}


def create_app(net: MLP, info: dict[str, Any], hosts: Iterable[str] = LOCAL_HOSTS,
               max_decodes: int = MAX_DECODES) -> Gate:
    """The app serving `net` behind its Gate; `info` is what GET /api/model answers, `hosts` the Host names
    it answers to."""
    probabilities(net, np.zeros((1, net.sizes[0]), np.float32))  # warm-up: on cuda, compiles the kernels now
    app = FastAPI(title="gpunet", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    decoding = [0]  # requests in the worker threads now

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:  # 404, 405: the same JSON shape
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=e.headers)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.api_route("/api/model", methods=["GET", "HEAD"])
    async def model() -> dict[str, Any]:
        return info

    @app.post("/api/predict")
    async def predict(request: Request) -> dict[str, Any]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in MEDIA_TYPES:
            raise BadRequest(415, f"content type {media or '(none)'!r} is not accepted; send {', '.join(MEDIA_TYPES)}")
        try:
            body = await asyncio.wait_for(read_body(request), BODY_TIMEOUT)
        except asyncio.TimeoutError:
            raise BadRequest(408, f"the body took over {BODY_TIMEOUT:g} s to arrive", {"connection": "close"}) from None
        if not body:
            raise BadRequest(400, "empty body: send a PNG of a digit, or JSON grey values")
        if decoding[0] >= max_decodes:
            raise BadRequest(503, f"busy with {decoding[0]} images; retry in a second", {"retry-after": "1"})
        decoding[0] += 1
        try:
            return await anyio.to_thread.run_sync(answer, net, body, media == "application/json")
        finally:
            decoding[0] -= 1

    return Gate(app, hosts)


async def busy(scope: dict, receive: Any, send: Any) -> None:
    """The answer to a request on a connection over MAX_CONNECTIONS: 503 in JSON, and the connection closes."""
    await JSONResponse({"error": f"over {MAX_CONNECTIONS} connections open; retry in a second"}, status_code=503,
                       headers={"retry-after": "1", "connection": "close"})(scope, receive, send)


class Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a cap on open connections and a deadline, HEADER_TIMEOUT after connecting
    or after each answer, by which the next request's headers must have arrived (uvicorn has none: a client that
    connects and sends nothing, or a byte at a time, would hold a socket; nor does its keep-alive timer hold
    once a request answered before its body was read (405, 413, 415, ...) gets the rest of that body a byte at a
    time, since every byte stops the timer).

    Beyond MAX_CONNECTIONS a connection's request gets `busy`'s JSON 503 (within CAP_HEADER_TIMEOUT);
    beyond twice as many it is closed at once."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if len(self.connections) > 2 * MAX_CONNECTIONS:
            self.connections.discard(self)
            transport.close()
            return
        self.over_cap = len(self.connections) > MAX_CONNECTIONS
        if self.over_cap:
            self.app = busy
        self.wait_for_head()

    def wait_for_head(self) -> None:
        """Close the connection unless a new request's headers have arrived within HEADER_TIMEOUT."""
        cycle = self.cycle
        timeout = CAP_HEADER_TIMEOUT if self.over_cap else HEADER_TIMEOUT
        self.loop.call_later(timeout, lambda: self.cycle is cycle and self.close_idle())

    def close_idle(self) -> None:
        """Close the connection unless a response is being sent (the request's body may still be unread)."""
        if not self.transport.is_closing() and self.conn.our_state in (h11.IDLE, h11.DONE):
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.wait_for_head()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes h11 cannot read, in JSON like every other answer, and the connection closes:
        431 for a request head over MAX_HEAD that arrived in pieces (one that came whole gets the Gate's), else 400."""
        if len(self.conn.trailing_data[0]) > MAX_HEAD:
            status, error = 431, f"request line and headers over {MAX_HEAD:,} bytes"
        else:
            status, error = 400, "not a valid HTTP/1.1 request"
        body = json.dumps({"error": error}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=status, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 picks a free one); GpunetError if it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise GpunetError(f"--host {host}: cannot listen there ({e.strerror or e})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise GpunetError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port") from None
    return sock


def server_config(app: Any) -> uvicorn.Config:
    """uvicorn's settings for `app`: the guarded protocol, keep-alive timeout, connection and header-size caps."""
    return uvicorn.Config(app, http=Protocol, log_level="warning", timeout_keep_alive=KEEP_ALIVE,
                          h11_max_incomplete_event_size=MAX_HEAD,
                          timeout_graceful_shutdown=2)


def serve(model: Path | None, backend: Backend, host: str, port: int, say=print,
          allow_hosts: Iterable[str] = ()) -> None:
    """Load the model, bind host:port, print the address and serve until Ctrl-C. The server answers to the
    Host names localhost, 127.0.0.1, ::1, `host` and `allow_hosts`."""
    path, newest = find_model(model)
    net, header = load_model(path, backend)
    if newest:
        say(f"using the newest run, {path} (pass MODEL to choose another)")
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    say(f"serving {'-'.join(map(str, net.sizes))} on {backend.name} at http://{url_host}:{bound}/ (Ctrl-C stops)")
    app = create_app(net, describe_model(path, net, header), (*LOCAL_HOSTS, host, *allow_hosts))
    uvicorn.Server(server_config(app)).run(sockets=[sock])
