"""The network as an ONNX graph: Gemm (+ Relu) per layer, Softmax at the end, built with the `onnx` package.

    input (N, n_0) float32 -> Gemm(W1, b1) -> Relu -> ... -> Gemm(WL, bL) -> Softmax(axis=1) -> probabilities (N, n_L)

Gemm computes A @ W + b, the model's Z_l = A_{l-1} @ W_l + b_l with W_l stored (n_{l-1}, n_l) as in gpunet.
The class names go into the model's metadata as a JSON list under "classes". `onnx` is an optional extra
(pip install 'gpunet[onnx]'); it is imported only here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.errors import GpunetError
from gpunet.files import atomic_write
from gpunet.core.model import sizes_of
from gpunet.version import __version__

OPSET = 17  # the default ONNX domain's opset the graph is written for
IR_VERSION = 8  # the ONNX IR version of opset 17, so runtimes from onnxruntime 1.13 on load it
INPUT, OUTPUT = "input", "probabilities"
INSTALL_HINT = "pip install 'gpunet[onnx]'"


def to_onnx(state: dict[str, np.ndarray], classes: list[Any], metadata: dict[str, str] | None = None) -> Any:
    """An onnx.ModelProto of the net in `state` (W1, b1, ..., WL, bL, host arrays) with `classes` as metadata,
    checked by onnx.checker. `metadata` adds further string properties (e.g. the input scaling)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "onnx":
            raise
        raise GpunetError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from None

    sizes = sizes_of(state)
    L = len(sizes) - 1
    if len(classes) != sizes[-1]:
        raise ValueError(f"{len(classes)} class names for an output layer of {sizes[-1]} units")
    nodes, weights = [], []
    A = INPUT
    for l in range(1, L + 1):
        weights += [numpy_helper.from_array(np.asarray(state[f"{n}{l}"], dtype=np.float32), f"{n}{l}") for n in "Wb"]
        nodes.append(helper.make_node("Gemm", [A, f"W{l}", f"b{l}"], [f"Z{l}"], name=f"dense{l}"))  # (N, n_l)
        A = f"A{l}" if l < L else OUTPUT
        if l < L:
            nodes.append(helper.make_node("Relu", [f"Z{l}"], [A], name=f"relu{l}"))
        else:
            nodes.append(helper.make_node("Softmax", [f"Z{l}"], [A], name="softmax", axis=1))
    graph = helper.make_graph(
        nodes, "gpunet_mlp",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", sizes[-1]])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="gpunet", producer_version=__version__,
                              doc_string=f"gpunet MLP {'-'.join(map(str, sizes))}, softmax probabilities")
    helper.set_model_props(model, {"classes": json.dumps([str(c) for c in classes]), **(metadata or {})})
    onnx.checker.check_model(model)
    return model


def save_onnx(path: Path, state: dict[str, np.ndarray], classes: list[Any],
              metadata: dict[str, str] | None = None) -> None:
    """Write `to_onnx(state, classes, metadata)` to `path` atomically."""
    data = to_onnx(state, classes, metadata).SerializeToString()
    atomic_write(Path(path), lambda f: f.write(data))
