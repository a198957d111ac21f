"""Comparing k methods over N data sets (Demšar 2006): average ranks, Friedman test, Nemenyi critical difference.

>>> ranks = rank_matrix(scores, higher_is_better=True)   # scores: (N data sets, k methods)
>>> test = friedman(ranks)                                 # statistic, p-value, Iman-Davenport F
>>> cd = critical_difference(k, N)                         # Nemenyi, alpha = 0.05
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

#: q_α/√2 of the Nemenyi test at α = 0.05 for k = 2..10 methods (Demšar 2006, Table 5a): the studentized
#: range statistic's 0.95 quantile with infinite degrees of freedom, divided by √2.
Q_ALPHA_005 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}

#: The protocol's minimum grid for a Friedman / Nemenyi comparison (PROTOCOL.md §7).
MIN_METHODS, MIN_DATASETS = 4, 5
#: Scores this close (relative) are one value, a tie: means over seeds that are equal as numbers (109+109+112 and
#: 108+110+112 errors of 455) differ in their last bits once summed in floats. Far below any real difference: one
#: error more in 3 seeds of delicious' 3 million test cells moves a mean by 1e-5 of itself.
TIE_RTOL = 1e-12


class FriedmanResult(NamedTuple):
    statistic: float  # χ²_F with the tie correction (scipy.stats.friedmanchisquare's)
    pvalue: float  # from χ² with k − 1 degrees of freedom
    iman_davenport: float  # F_F = (N−1)χ²_F / (N(k−1) − χ²_F), Demšar's less conservative form
    # from F with (k−1, (k−1)(N−1)) degrees of freedom; 0 when F_F is infinite (every data set ranks the methods
    # in the same order), however few the data sets: ``pvalue`` then says whether that is evidence
    iman_davenport_pvalue: float
    n_datasets: int
    n_methods: int


def rank_matrix(scores, higher_is_better: bool = True) -> np.ndarray:
    """Ranks (1 = best) of k methods within each of N data sets; ties get the average rank. Scores within
    ``TIE_RTOL`` of each other (relative) are ties: equal means whose float sums differ in the last bits.

    scores : array of shape (n_datasets, n_methods). Raises ValueError on NaN (a rank needs every value).
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"scores has shape {scores.shape}; expected (n_datasets, n_methods)")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf; expected a finite value for every data set and method")
    signed = -scores if higher_is_better else scores
    return stats.rankdata(np.vstack([_merge_ties(row) for row in signed]), axis=1)


def _merge_ties(row: np.ndarray) -> np.ndarray:
    """``row`` with each value within ``TIE_RTOL`` of the next smaller one set to that one (an exact tie)."""
    order = np.argsort(row, kind="stable")
    values = row[order]
    for i in range(1, values.size):
        if values[i] - values[i - 1] <= TIE_RTOL * max(abs(values[i]), abs(values[i - 1])):
            values[i] = values[i - 1]
    out = np.empty_like(values)
    out[order] = values
    return out


def average_ranks(ranks) -> np.ndarray:
    return np.asarray(ranks, dtype=float).mean(axis=0)


def friedman(ranks) -> FriedmanResult:
    """The Friedman test from a rank matrix (n_datasets, n_methods), ties corrected as in scipy.

    χ²_F = [12 / (N k (k+1)) Σ_j R_j² − 3 N (k+1)] / C, with R_j the rank sums and
    C = 1 − Σ (t³ − t) / (N k (k² − 1)) over tie groups t (C = 1 without ties: Demšar's eq.).
    """
    ranks = np.asarray(ranks, dtype=float)
    n, k = ranks.shape
    if k < 2 or n < 2:
        raise ValueError(f"the Friedman test needs >= 2 methods and >= 2 data sets; got {k} and {n}")
    rank_sums = ranks.sum(axis=0)
    ties = sum(float(((c := np.unique(row, return_counts=True)[1]) ** 3 - c).sum()) for row in ranks)
    correction = 1.0 - ties / (n * k * (k * k - 1))
    if correction <= 0:  # every data set ties every method: no evidence of any difference
        return FriedmanResult(0.0, 1.0, 0.0, 1.0, n, k)
    chi2 = (12.0 / (n * k * (k + 1)) * float((rank_sums**2).sum()) - 3.0 * n * (k + 1)) / correction
    chi2 = max(chi2, 0.0)
    pvalue = float(stats.chi2.sf(chi2, k - 1))
    denom = n * (k - 1) - chi2
    # the same order on every data set: F_F is infinite and F's survival function there is 0 (chi2 then equals
    # n(k − 1) up to rounding, which could leave a denominator of 1e-15 and an F_F of 1e16)
    if denom <= 1e-9 * n * (k - 1):
        ff, ff_p = math.inf, 0.0
    else:
        ff = (n - 1) * chi2 / denom
        ff_p = float(stats.f.sf(ff, k - 1, (k - 1) * (n - 1)))
    return FriedmanResult(float(chi2), pvalue, float(ff), ff_p, n, k)


def q_alpha(k: int, alpha: float = 0.05) -> float:
    """q_α/√2 of the Nemenyi test: Demšar's table for α = 0.05 and k ≤ 10, else scipy's studentized range."""
    if k < 2:
        raise ValueError(f"k={k}; expected >= 2 methods")
    if alpha == 0.05 and k in Q_ALPHA_005:
        return Q_ALPHA_005[k]
    return float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi CD = q_α · sqrt(k (k+1) / (6 N)): two methods whose average ranks differ by more differ."""
    return q_alpha(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n))


def cliques(avg_ranks, cd: float) -> list[tuple[int, ...]]:
    """Maximal groups of methods (indices) whose average ranks all lie within ``cd``: the CD diagram's bars."""
    order = np.argsort(avg_ranks, kind="stable")
    r = np.asarray(avg_ranks, dtype=float)[order]
    groups: list[tuple[int, ...]] = []
    for i in range(len(r)):
        j = i
        while j + 1 < len(r) and r[j + 1] - r[i] <= cd:
            j += 1
        if j > i and not any(set(order[i : j + 1]) <= set(g) for g in groups):
            groups.append(tuple(int(m) for m in order[i : j + 1]))
    return groups


def significant_pairs(avg_ranks, cd: float) -> list[tuple[int, int, float]]:
    """Pairs (better, worse, rank gap) of methods whose average ranks differ by more than ``cd`` (Nemenyi).

    Sorted by the better method's rank, then by the gap, largest first. Only meaningful after the Friedman test
    has rejected "all methods equal" (Demšar 2006, section 3.2.2).
    """
    r = np.asarray(avg_ranks, dtype=float)
    gaps = r[None, :] - r[:, None]  # gaps[i, j] = rank(j) - rank(i) > 0: i is better than j
    better, worse = np.nonzero(gaps > cd)
    pairs = [(int(i), int(j), float(gaps[i, j])) for i, j in zip(better, worse, strict=True)]
    return sorted(pairs, key=lambda p: (r[p[0]], p[0], -p[2], p[1]))
