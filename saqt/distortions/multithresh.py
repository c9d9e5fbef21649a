"""MATLAB ``multithresh`` for N >= 3 thresholds: Otsu's criterion maximised by ``fminsearch``."""

from __future__ import annotations

import numpy as np

from saqt.distortions.primitives import mround


def otsu_cost(hist: np.ndarray):
    """The negated between-class variance of a 256-bin histogram, as a function of real thresholds."""
    p = hist / hist.sum()
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(1, 257))
    mu_total = mu[-1]

    def cost(t: np.ndarray) -> float:
        bins = mround(t).astype(np.int64) + 1  # 1-based bins
        if bins[0] <= 1 or bins[-1] >= 256 or np.any(np.diff(bins) <= 0):
            return np.inf
        idx = np.append(bins, 256) - 1
        w, m = omega[idx], mu[idx]
        dw = np.diff(w, prepend=0.0)
        dm = np.diff(m, prepend=0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = float(np.sum(dw * (dm / dw - mu_total) ** 2))
        return -var if np.isfinite(var) else np.inf

    return cost


def fminsearch(fn, x0: np.ndarray, tol_x: float, tol_f: float, max_iter: int, max_evals: int) -> np.ndarray:
    """Nelder-Mead simplex search with the steps, initial simplex and stopping rule of MATLAB's fminsearch."""
    n = x0.size
    simplex = np.tile(np.asarray(x0, dtype=np.float64), (n + 1, 1))
    for j in range(n):
        simplex[j + 1, j] = 1.05 * x0[j] if x0[j] != 0 else 0.00025
    values = np.array([fn(v) for v in simplex])
    evals = n + 1
    order = np.argsort(values, kind="stable")
    simplex, values = simplex[order], values[order]
    iters = 1
    while evals < max_evals and iters < max_iter:
        with np.errstate(invalid="ignore"):  # inf - inf where every vertex is infeasible: NaN, as in MATLAB
            spread_f = np.max(np.abs(values[0] - values[1:]))
        spread_x = np.max(np.abs(simplex[1:] - simplex[0]))
        if spread_f <= max(tol_f, 10 * np.spacing(values[0])) and spread_x <= max(
            tol_x, 10 * np.spacing(np.max(simplex[0]))
        ):
            break
        centroid = simplex[:n].mean(axis=0)
        worst = simplex[n]
        reflected = 2 * centroid - worst
        f_r = fn(reflected)
        evals += 1
        shrink = False
        if f_r < values[0]:
            expanded = 3 * centroid - 2 * worst
            f_e = fn(expanded)
            evals += 1
            simplex[n], values[n] = (expanded, f_e) if f_e < f_r else (reflected, f_r)
        elif f_r < values[n - 1]:
            simplex[n], values[n] = reflected, f_r
        elif f_r < values[n]:
            contracted = 1.5 * centroid - 0.5 * worst
            f_c = fn(contracted)
            evals += 1
            if f_c <= f_r:
                simplex[n], values[n] = contracted, f_c
            else:
                shrink = True
        else:
            contracted = 0.5 * centroid + 0.5 * worst
            f_c = fn(contracted)
            evals += 1
            if f_c < values[n]:
                simplex[n], values[n] = contracted, f_c
            else:
                shrink = True
        if shrink:
            simplex[1:] = simplex[0] + 0.5 * (simplex[1:] - simplex[0])
            values[1:] = [fn(v) for v in simplex[1:]]
            evals += n
        order = np.argsort(values, kind="stable")
        simplex, values = simplex[order], values[order]
        iters += 1
    return simplex[0]


def multithresh(hist: np.ndarray, levels: int) -> np.ndarray:
    """``levels`` thresholds in grey levels 0..255 for a 256-bin histogram, as MATLAB's multithresh finds them.

    The histogram must have more than ``levels`` occupied bins (MATLAB's degenerate case is the caller's).
    """
    # MATLAB's linspace(0, 255, N + 2) computes (k * 255) / (N + 1); numpy's divides first, which differs in the
    # last bit for some k and sends the simplex search elsewhere (most photos at N = 20).
    x0 = np.arange(1, levels + 1) * 255.0 / (levels + 1)
    cost = otsu_cost(hist)
    best = fminsearch(cost, x0, tol_x=1.0, tol_f=1e-4, max_iter=200 * levels, max_evals=200 * levels)
    return mround(best) if np.isfinite(cost(best)) else best  # no finite criterion found: MATLAB does not round
