"""MATLAB ``multithresh`` for N >= 3 thresholds: Otsu's criterion maximised by ``fminsearch``.

The search and the criterion are compiled with numba; their arithmetic follows the numpy
formulation step for step (``numpy_sum`` reproduces numpy's summation order), so the thresholds
are the ones the plain numpy code finds.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from numba import types
from numba.extending import overload, register_jitable

from saqt.build.distortions.primitives import mround

_PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE


@numba.njit(cache=True, nogil=True)
def numpy_sum(a: np.ndarray) -> float:
    """``np.sum`` of a 1-D float64 array of at most 128 values, bit for bit (numpy's pairwise summation)."""
    n = a.size
    if n > _PAIRWISE_BLOCK:
        raise ValueError("numpy_sum reproduces numpy's order for at most 128 values")
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    r = a[:8].copy()  # eight running sums, combined as a tree, then the remainder added one by one
    i = 8
    while i < n - n % 8:
        for j in range(8):
            r[j] += a[i + j]
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for k in range(i, n):
        res += a[k]
    return res


@numba.njit(cache=True, nogil=True, error_model="numpy")
def otsu_cost(t: np.ndarray, omega: np.ndarray, mu: np.ndarray) -> float:
    """The negated between-class variance of real thresholds ``t`` (grey levels 0..255), +inf if infeasible.

    ``omega`` and ``mu`` are the cumulative class probability and first moment of a 256-bin histogram.
    """
    n = t.size
    bins = np.empty(n + 1, np.int64)  # 1-based bins, the last one closing the range
    for k in range(n):
        bins[k] = int(np.sign(t[k]) * np.floor(np.abs(t[k]) + 0.5)) + 1
    bins[n] = 256
    if bins[0] <= 1 or bins[n - 1] >= 256:
        return np.inf
    for k in range(1, n):
        if bins[k] <= bins[k - 1]:
            return np.inf
    terms = np.empty(n + 1)
    w_prev, m_prev = 0.0, 0.0
    for k in range(n + 1):
        w, m = omega[bins[k] - 1], mu[bins[k] - 1]
        dw, dm = w - w_prev, m - m_prev
        terms[k] = dw * (dm / dw - mu[255]) ** 2
        w_prev, m_prev = w, m
    var = numpy_sum(terms)
    return -var if np.isfinite(var) else np.inf


OTSU = 0  # compiled searches name their cost by a tag: numba cannot cache code that is passed a function


def _evaluate(cost, x: np.ndarray, args: tuple) -> float:
    """``cost(x, *args)``; in compiled code ``cost`` is a tag (OTSU) naming the function."""
    return cost(x, *args)


@overload(_evaluate)
def _evaluate_compiled(cost, x, args):
    if isinstance(cost, types.Integer):

        def otsu(cost, x, args):
            return otsu_cost(x, *args)

        return otsu
    return None


@numba.njit(cache=True, nogil=True)
def _sort_simplex(simplex: np.ndarray, values: np.ndarray) -> None:
    """Order the vertices by value in place, ties kept in their current order."""
    order = np.argsort(values, kind="mergesort")
    simplex[:] = simplex[order]
    values[:] = values[order]


@register_jitable
def _initial_simplex(cost, args, x0):
    """fminsearch's start: ``x0`` and, per coordinate, ``x0`` with that coordinate 5% larger (0.00025 where it is
    0); the vertices and their values, best first."""
    n = x0.size
    simplex = np.empty((n + 1, n))
    values = np.empty(n + 1)
    for i in range(n + 1):
        simplex[i] = x0
        if i > 0:
            simplex[i, i - 1] = 1.05 * x0[i - 1] if x0[i - 1] != 0 else 0.00025
        values[i] = _evaluate(cost, simplex[i], args)
    _sort_simplex(simplex, values)
    return simplex, values


@register_jitable
def _converged(simplex, values, tol_x, tol_f):
    """fminsearch's stopping rule: every vertex within ``tol_f`` of the best value and ``tol_x`` of the best point."""
    spread_f = np.max(np.abs(values[0] - values[1:]))
    spread_x = np.max(np.abs(simplex[1:] - simplex[0]))
    return spread_f <= max(tol_f, 10 * np.spacing(values[0])) and spread_x <= max(
        tol_x, 10 * np.spacing(np.max(simplex[0]))
    )


@register_jitable
def _contract(cost, args, simplex, values, centroid, worst, f_r):
    """Contract the worst vertex (outside of the simplex when the reflection ``f_r`` beat it, else inside); shrink
    every vertex halfway to the best one when that fails. Returns the number of evaluations."""
    n = values.size - 1
    outside = f_r < values[n]
    contracted = 1.5 * centroid - 0.5 * worst if outside else 0.5 * centroid + 0.5 * worst
    f_c = _evaluate(cost, contracted, args)
    if (f_c <= f_r) if outside else (f_c < values[n]):
        simplex[n], values[n] = contracted, f_c
        return 1
    for i in range(1, n + 1):
        simplex[i] = simplex[0] + 0.5 * (simplex[i] - simplex[0])
        values[i] = _evaluate(cost, simplex[i], args)
    return 1 + n


@register_jitable
def _step(cost, args, simplex, values):
    """One fminsearch iteration: the worst vertex reflected through the others' centroid, then expanded, kept or
    contracted; the simplex sorted again. Returns the number of evaluations."""
    n = values.size - 1
    centroid = simplex[0].copy()
    for i in range(1, n):
        centroid += simplex[i]
    centroid /= n
    worst = simplex[n].copy()
    reflected = 2 * centroid - worst
    f_r = _evaluate(cost, reflected, args)
    evals = 1
    if f_r < values[0]:
        expanded = 3 * centroid - 2 * worst
        f_e = _evaluate(cost, expanded, args)
        evals += 1
        if f_e < f_r:
            simplex[n], values[n] = expanded, f_e
        else:
            simplex[n], values[n] = reflected, f_r
    elif f_r < values[n - 1]:
        simplex[n], values[n] = reflected, f_r
    else:
        evals += _contract(cost, args, simplex, values, centroid, worst, f_r)
    _sort_simplex(simplex, values)
    return evals


def _nelder_mead(cost, args, x0, tol_x, tol_f, max_iter, max_evals):
    """Nelder-Mead simplex search with the steps, initial simplex and stopping rule of MATLAB's fminsearch.

    Minimises ``_evaluate(cost, x, args)``: Python runs it for any callable, numba compiles it for a tag (its
    parts are ``register_jitable``: plain Python when called from Python).
    """
    simplex, values = _initial_simplex(cost, args, x0)
    evals = x0.size + 1
    iters = 1
    while evals < max_evals and iters < max_iter and not _converged(simplex, values, tol_x, tol_f):
        evals += _step(cost, args, simplex, values)
        iters += 1
    return simplex[0].copy()


_compiled_nelder_mead = numba.njit(cache=True, nogil=True)(_nelder_mead)


def fminsearch(
    fn: Callable, x0: np.ndarray, tol_x: float, tol_f: float, max_iter: int, max_evals: int, args: tuple = ()
) -> np.ndarray:
    """Minimise ``fn(x, *args)`` from ``x0`` as MATLAB's fminsearch does (in Python; multithresh runs it compiled)."""
    with np.errstate(invalid="ignore"):  # inf - inf where every vertex is infeasible: NaN, as in MATLAB
        return _nelder_mead(fn, args, np.asarray(x0, dtype=np.float64), tol_x, tol_f, max_iter, max_evals)


def multithresh(hist: np.ndarray, levels: int) -> np.ndarray:
    """``levels`` thresholds in grey levels 0..255 for a 256-bin histogram, as MATLAB's multithresh finds them.

    The histogram must have more than ``levels`` occupied bins (MATLAB's degenerate case is the caller's).
    """
    p = hist / hist.sum()
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(1, 257))
    # MATLAB's linspace(0, 255, N + 2) computes (k * 255) / (N + 1); numpy's divides first, which differs in the
    # last bit for some k and sends the simplex search elsewhere (most photos at N = 20).
    x0 = np.arange(1, levels + 1) * 255.0 / (levels + 1)
    best = _compiled_nelder_mead(OTSU, (omega, mu), x0, 1.0, 1e-4, 200 * levels, 200 * levels)
    # no finite criterion found: MATLAB does not round
    return mround(best) if np.isfinite(otsu_cost(best, omega, mu)) else best
