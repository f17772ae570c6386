"""The CuPy stand-in against the real CuPy: every function, method and keyword the stand-in offers exists in
CuPy with the same parameters (names, order, defaults), so the stand-in cannot drift from what it stands for.

CuPy imports without a GPU (CI runs this file in a venv with cupy-cuda12x and nvidia-cublas-cu12, .ci/run);
where it is not installed, the module is skipped with that reason. CuPy's Cython functions carry no
`__signature__`: their signature is read from the first line of their docstring, as CuPy's docs show it."""

import ast
import inspect
import re

import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed: pip install cupy-cuda12x nvidia-cublas-cu12")
cublas = pytest.importorskip("cupy.cublas", reason="cupy.cublas does not import: pip install nvidia-cublas-cu12")
import cupy.cuda.graph  # noqa: E402

from devices import cupy_standin as standin  # noqa: E402

# Each class of the stand-in and the CuPy object it stands for.
COUNTERPARTS = {
    standin.Cupy: cupy, standin.Cublas: cublas, standin.Cuda: cupy.cuda,
    standin.Stream: cupy.cuda.Stream, standin.Graph: cupy.cuda.graph.Graph, standin.Event: cupy.cuda.Event,
    standin.Device: cupy.cuda.Device, standin.Runtime: cupy.cuda.runtime, standin.MemoryPool: cupy.cuda.MemoryPool,
    standin.Random: cupy.random, standin.ndarray: cupy.ndarray,
}
CONSTRUCTED = {standin.Stream, standin.Event, standin.Device}  # by gpunet; the others' constructors are the stand-in's


def offered(cls):
    """(name, attribute) of what a stand-in class offers, its strict bases' too: public names, the context
    protocol, and the constructor of what gpunet constructs."""
    seen = set()
    for klass in cls.__mro__[:-1]:
        for name, value in vars(klass).items():
            if name not in seen and (not name.startswith("_") or name in ("__enter__", "__exit__")
                                     or (name == "__init__" and klass in CONSTRUCTED)):
                seen.add(name)
                yield name, value


def doc_signature(obj):
    """The signature in the first line of a Cython docstring, e.g. "malloc(self, size_t size) -> MemoryPointer"."""
    first = (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""
    m = re.match(r"[\w.]*\((.*)\)", first)
    if not m:
        raise ValueError(f"no signature for {obj!r}")
    params = []
    for part in filter(None, (p.strip() for p in m.group(1).split(","))):
        if part in ("/", "*"):
            continue
        decl, _, default = part.partition("=")
        name = decl.split()[-1].lstrip("*")
        kind = inspect.Parameter.VAR_POSITIONAL if decl.strip().startswith("*") else \
            inspect.Parameter.POSITIONAL_OR_KEYWORD
        params.append(inspect.Parameter(name, kind, default=ast.literal_eval(default.strip()) if default else
                                        inspect.Parameter.empty))
    return inspect.Signature(params)


def real_signature(owner, name):
    obj = getattr(owner, name)
    if name == "__init__" and inspect.isclass(owner):
        try:
            sig = inspect.signature(obj)
        except ValueError:
            sig = None
        if sig is None or any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
            return doc_signature(owner)  # "Device(device=None)": the class's docstring
        return sig
    try:
        return inspect.signature(obj)
    except ValueError:
        return doc_signature(obj)


def params(sig):
    return [p for p in sig.parameters.values() if p.name != "self"]


CASES = [(cls, name, value) for cls in COUNTERPARTS for name, value in offered(cls)]


@pytest.mark.parametrize("cls, name, value", CASES, ids=[f"{c.__name__}.{n}" for c, n, _ in CASES])
def test_the_stand_in_offers_only_what_cupy_has(cls, name, value):
    real_owner = COUNTERPARTS[cls]
    assert hasattr(real_owner, name), f"CuPy's {real_owner.__name__} has no {name}"
    if isinstance(value, (property, str, bytes, type)) or not callable(value):
        return  # an attribute: its presence is the contract
    mine, theirs = params(inspect.signature(value)), params(real_signature(real_owner, name))
    names = [p.name for p in theirs]
    for i, p in enumerate(mine):
        if p.kind == p.KEYWORD_ONLY:
            assert p.name in names, f"{name}: CuPy has no keyword {p.name!r} ({names})"
        else:
            assert i < len(theirs) and theirs[i].name == p.name, f"{name}: parameter {i} is {p.name!r}, CuPy's {names}"
        if p.default is not p.empty:
            real = next(q for q in theirs if q.name == p.name)
            assert real.default is p.empty or real.default == p.default, f"{name}({p.name}=...): CuPy's default " \
                                                                         f"is {real.default!r}"
    required = [q.name for q in theirs[len(mine):] if q.default is q.empty and q.kind == q.POSITIONAL_OR_KEYWORD]
    assert not required, f"{name}: CuPy also requires {required}"


def test_arrays_are_told_apart_by_their_module_as_on_cupy():
    assert standin.ndarray.__module__ == cupy.ndarray.__module__ == "cupy"
    assert standin.VERSION.split(".")[0] == cupy.__version__.split(".")[0]
