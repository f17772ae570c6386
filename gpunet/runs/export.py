"""The network as an ONNX graph: Gemm and the activation per layer, the output function at the end, built with the
`onnx` package.

    input (N, n_0) float32 -> Gemm(W1, b1) -> Relu -> ... -> Gemm(WL, bL) -> Softmax(axis=1) -> probabilities (N, n_L)

Gemm computes A @ W + b, the model's Z_l = A_{l-1} @ W_l + b_l with W_l stored (n_{l-1}, n_l) as in gpunet.
Hidden activations relu, tanh, logistic, identity are Relu, Tanh, Sigmoid, Identity; outputs softmax, logistic,
identity are Softmax(axis=1), Sigmoid, Identity. A single logistic unit with two class names (a binary
classifier) ends in Concat(1 - p, p), so "probabilities" has a column per class; an identity output is named
"predictions". The class (or output) names go into the model's metadata as a JSON list under "classes". `onnx`
is an optional extra (pip install 'gpunet[onnx]'); it is imported only here.
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
ONNX_OPS = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "identity": "Identity", "softmax": "Softmax"}
IR_VERSION = 8  # the ONNX IR version of opset 17, so runtimes from onnxruntime 1.13 on load it
INPUT, OUTPUT = "input", "probabilities"
INSTALL_HINT = "pip install 'gpunet[onnx]'"


def to_onnx(state: dict[str, np.ndarray], classes: list[Any], metadata: dict[str, str] | None = None,
            activation: str = "relu", output: str = "softmax") -> Any:
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
    binary = output == "logistic" and sizes[-1] == 1 and len(classes) == 2
    if len(classes) != sizes[-1] and not binary:
        raise ValueError(f"{len(classes)} class names for an output layer of {sizes[-1]} units")
    if activation not in ONNX_OPS or output not in ("softmax", "logistic", "identity"):
        raise ValueError(f"no ONNX operator for activation {activation!r} or output {output!r}")
    out_name = "predictions" if output == "identity" else OUTPUT
    nodes, weights = [], []
    A = INPUT
    for l in range(1, L + 1):
        weights += [numpy_helper.from_array(np.asarray(state[f"{n}{l}"], dtype=np.float32), f"{n}{l}") for n in "Wb"]
        nodes.append(helper.make_node("Gemm", [A, f"W{l}", f"b{l}"], [f"Z{l}"], name=f"dense{l}"))  # (N, n_l)
        A = f"A{l}" if l < L else ("p" if binary else out_name)
        op = ONNX_OPS[activation if l < L else output]
        attrs = {"axis": 1} if op == "Softmax" else {}
        nodes.append(helper.make_node(op, [f"Z{l}"], [A], name=f"{op.lower()}{l}", **attrs))  # A_l = f(Z_l)
    if binary:  # (N, 1) -> (N, 2): [1 - p, p]
        weights.append(numpy_helper.from_array(np.ones((1, 1), np.float32), "one"))
        nodes += [helper.make_node("Sub", ["one", "p"], ["q"], name="complement"),
                  helper.make_node("Concat", ["q", "p"], [out_name], name="columns", axis=1)]
    graph = helper.make_graph(
        nodes, "gpunet_mlp",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", len(classes)])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="gpunet", producer_version=__version__,
                              doc_string=f"gpunet MLP {'-'.join(map(str, sizes))}, {activation} hidden, {output} "
                                         f"output")
    helper.set_model_props(model, {"classes": json.dumps([str(c) for c in classes]), **(metadata or {})})
    onnx.checker.check_model(model)
    return model


def save_onnx(path: Path, state: dict[str, np.ndarray], classes: list[Any],
              metadata: dict[str, str] | None = None, activation: str = "relu", output: str = "softmax") -> None:
    """Write `to_onnx(state, classes, metadata, activation, output)` to `path` atomically."""
    data = to_onnx(state, classes, metadata, activation, output).SerializeToString()
    atomic_write(Path(path), lambda f: f.write(data))
