"""Levenberg-Marquardt in a box: the one solver loop the smile fit and the surface fit share.

    minimise(p0, lo, hi, value=f, model=m, ...) -> Solution(p, steps, capped)

`value(p)` is the objective (0.5 x sum of squared residuals, or what the fit majorises); `model(p)` its
gradient, Gauss-Newton Hessian and the diagonal that scales the damping at p (the caller decides which
rows set the scale: the surface leaves its stiff arbitrage rows out, see surface_fit). A step solves
(H + mu diag(D)) step = -grad (a handful of parameters: a small dense solve), is clipped to the box and is
taken only if the objective does not rise; mu grows tenfold per refused step and shrinks tenfold per
taken one. With `hold_bounds`, a parameter on a bound whose gradient pushes outward is held there
(an active set), so the others still move. Pure numpy; callers cache value/model by p when both come
from one pass over their quotes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Solution:
    """Where the steps stopped, how many were taken, and whether `max_steps` cut a descent short (the last
    step still lowered the objective by more than the tolerances: the point is not a converged optimum)."""

    p: np.ndarray
    steps: int
    capped: bool


@dataclass(frozen=True)
class Model:
    """What a step needs at the current point."""

    grad: np.ndarray
    hess: np.ndarray
    damping: np.ndarray  # the diagonal that scales mu (positive)


def minimise(
    p0: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    value: Callable[[np.ndarray], float],
    model: Callable[[np.ndarray], Model],
    max_steps: int,
    step_tol: float,
    rel_tol: float,
    mu_range: tuple[float, float],
    hold_bounds: bool,
) -> Solution:
    """The parameters where the steps stopped: no parameter moved more than `step_tol`, the objective fell by
    at most `rel_tol` of itself, no step within mu < mu_range[1] lowered it, or `max_steps` were taken
    (`capped`)."""
    p = p0
    f = value(p)
    mu = 1e-3
    mu_min, mu_max = mu_range
    steps = 0
    for _ in range(max_steps):  # solver iterations (each vectorised over the caller's rows)
        m = model(p)
        if hold_bounds:
            fr = ~(((p <= lo + 1e-12) & (m.grad > 0)) | ((p >= hi - 1e-12) & (m.grad < 0)))
            Hf, gf, D = m.hess[np.ix_(fr, fr)], m.grad[fr], m.damping[fr]
        else:
            fr, Hf, gf, D = None, m.hess, m.grad, m.damping
        improved = False
        while mu < mu_max:
            step = np.zeros_like(p)
            if fr is None:
                step = np.linalg.solve(Hf + mu * np.diag(D), -gf)
            else:
                step[fr] = np.linalg.solve(Hf + mu * np.diag(D), -gf)
            cand = np.clip(p + step, lo, hi)
            fc = value(cand)
            if fc <= f:
                improved = True
                break
            mu *= 10.0
        if not improved:
            return Solution(p, steps, False)
        moved = float(np.max(np.abs(cand - p)))
        gain = f - fc
        p, f = cand, fc
        steps += 1
        mu = max(mu / 10.0, mu_min)
        if moved < step_tol or gain <= rel_tol * f:
            return Solution(p, steps, False)
    return Solution(p, steps, max_steps > 0)
