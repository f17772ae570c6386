"""The equations' products as BLAS calls, with GEMM's alpha and beta: out := alpha A @ B + beta out.

A scale folded into alpha (the loss's 1/m) or an accumulation into beta (momentum's mu v, the chunks of a
sum) saves a pass over memory each. On the CPU the calls go to `scipy.linalg.blas` (the OpenBLAS that SciPy
bundles), on a GPU to cuBLAS through `cupy.cublas`. Operands are row-major arrays or their `.T` views, as
the equations write them; `out` is row-major.
"""

from __future__ import annotations

from typing import Any

from gpunet.backend import Backend

Array = Any


class Blas:
    """gemm, colsum (1^T M, the sum over the batch) and axpy on one backend."""

    def __init__(self, backend: Backend):
        self.backend = backend
        if backend.name == "cuda":
            import cupy.cublas

            self.cublas = cupy.cublas
        else:
            from scipy.linalg import blas

            self.fblas = {dt: blas.get_blas_funcs(("gemm", "gemv", "axpy"), dtype=dt)
                          for dt in ("float32", "float64")}

    def gemm(self, A: Array, B: Array, out: Array, alpha: Any = 1.0, beta: Any = 0.0) -> Array:
        """out := alpha A @ B + beta out   # (m, k) @ (k, n) -> (m, n)"""
        if self.backend.name == "cuda":
            (a, ta), (b, tb) = _rowmajor(A), _rowmajor(B)
            return self.cublas.gemm(ta, tb, a, b, out=out, alpha=alpha, beta=beta)
        # Column-major BLAS sees the row-major out as out.T = B.T @ A.T.
        (b, tb), (a, ta) = _colmajor(B.T), _colmajor(A.T)
        gemm = self.fblas[out.dtype.name][0]
        gemm(alpha, b, a, beta=beta, c=out.T, trans_a=tb, trans_b=ta, overwrite_c=1)
        return out

    def colsum(self, M: Array, ones: Array, out: Array, alpha: Any = 1.0, beta: Any = 0.0) -> Array:
        """out := alpha 1^T M + beta out   # (m, n) -> (n,), ones (m,)"""
        if self.backend.name == "cuda":
            return self.cublas.gemv("T", M, ones, out=out, alpha=alpha, beta=beta)
        gemv = self.fblas[out.dtype.name][1]
        gemv(alpha, M.T, ones, beta=beta, y=out, overwrite_y=1)  # M.T is column-major (n, m)
        return out

    def axpy(self, a: Any, x: Array, y: Array, tmp: Array) -> Array:
        """y += a x, through `tmp` on a GPU (where `a` may be a 0-d device array)."""
        if self.backend.name == "cuda":
            y += self.backend.xp.multiply(x, a, out=tmp)
            return y
        self.fblas[y.dtype.name][2](x.reshape(-1), y.reshape(-1), a=a)  # in place on contiguous y
        return y


def _colmajor(M: Array) -> tuple[Array, int]:
    """(F, trans) with op(F) == M and F column-major, for scipy's BLAS."""
    return (M, 0) if M.flags.f_contiguous else (M.T, 1)


def _rowmajor(M: Array) -> tuple[Array, str]:
    """(R, trans) with op(R) == M and R row-major, for cupy.cublas."""
    return (M, "N") if M.flags.c_contiguous else (M.T, "T")
