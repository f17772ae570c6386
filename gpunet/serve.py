"""`gpunet serve`: a page to draw a digit on, and a small JSON API, for one trained model (FastAPI + uvicorn).

    GET  /             the drawing page (gpunet/static/, plain HTML/CSS/JS, nothing fetched from elsewhere)
    GET  /api/model    sizes, dataset, class names, test accuracy and epochs of the loaded model
    POST /api/predict  a PNG (or JPEG) of a digit, or JSON grey values, 28x28 or 784 of them, in [0, 1]
                       -> {"top": k, "probabilities": [10], "image": 28x28 the network saw}

Both kinds of input go through `gpunet.preprocess.to_mnist`, the preprocessing of `gpunet predict`.
A bad request gets a 4xx status and {"error": "..."}; the server keeps serving.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from gpunet.backend import Backend
from gpunet.errors import GpunetError
from gpunet.evaluate import probabilities
from gpunet.model import MLP
from gpunet.preprocess import SIZE, decode_image, to_mnist
from gpunet.store import load_model

STATIC = Path(__file__).parent / "static"
MAX_BODY = 1_000_000  # bytes; a 280x280 drawing as PNG is a few kB


class BadRequest(Exception):
    """A request the client must fix: answered with `status` and {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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
    """What GET /api/model answers, from the model file's header (train writes its final test metrics there)."""
    return {
        "model": str(path),
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
    too_big = BadRequest(413, f"request body over {MAX_BODY // 1_000_000} MB; send a smaller image")
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
    """JSON `[...]` or `{"pixels": [...]}`: 28x28 or 784 grey values in [0, 1] -> a float ("F") image."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise BadRequest(400, "body is JSON nested too deeply") from None
    except ValueError as e:
        raise BadRequest(400, f"body is not valid JSON ({e})") from None
    if isinstance(data, dict):
        if "pixels" not in data:
            raise BadRequest(422, 'JSON object has no "pixels": send {"pixels": 28x28 or 784 numbers in [0, 1]}')
        data = data["pixels"]
    try:
        grey = np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(422, "pixels must be numbers in a 28x28 nested list or a flat list of 784") from None
    if grey.shape not in ((SIZE, SIZE), (SIZE * SIZE,)):
        raise BadRequest(422, f"pixels have shape {list(grey.shape)}; send 28x28 or 784 values")
    if not np.all(np.isfinite(grey)) or grey.min() < 0 or grey.max() > 1:
        raise BadRequest(422, "pixel values must lie in [0, 1] (0 black, 1 white)")
    return Image.fromarray(grey.reshape(SIZE, SIZE).astype(np.float32))


def create_app(net: MLP, info: dict[str, Any]) -> FastAPI:
    """The FastAPI app serving `net`; `info` is what GET /api/model answers."""
    app = FastAPI(title="gpunet", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=e.status)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/model")
    async def model() -> dict[str, Any]:
        return info

    @app.post("/api/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await read_body(request)
        if not body:
            raise BadRequest(400, "empty body: send a PNG of a digit, or JSON grey values")
        is_json = request.headers.get("content-type", "").split(";")[0].strip() == "application/json"
        try:
            image = grey_from_json(body) if is_json else decode_image(body, "request body")
            x = to_mnist(image)  # (28, 28) in [0, 1]
        except GpunetError as e:
            raise BadRequest(422 if is_json else 400, str(e)) from None
        proba = probabilities(net, x.reshape(1, -1))[0]  # (k,)
        return {"top": int(proba.argmax()), "probabilities": [round(float(p), 6) for p in proba],
                "image": np.round(x, 3).tolist()}

    return app


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


def serve(model: Path | None, backend: Backend, host: str, port: int, say=print) -> None:
    """Load the model, bind host:port, print the address and serve until Ctrl-C."""
    path, newest = find_model(model)
    net, header = load_model(path, backend)
    if newest:
        say(f"using the newest run, {path} (pass MODEL to choose another)")
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    say(f"serving {'-'.join(map(str, net.sizes))} on {backend.name} at http://{url_host}:{bound}/ (Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(create_app(net, describe_model(path, net, header)), log_level="warning"))
    server.run(sockets=[sock])
