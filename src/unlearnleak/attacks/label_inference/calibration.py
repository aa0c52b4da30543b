"""Calibrated "detected" verdicts: a gap statistic and thresholds that hold a stated false-detection level.

Without calibration a verdict means nothing: classes drift after any update of a model (one more SGD step,
a few deleted samples), and a fixed "3 spreads" rule fired in 8–12 % of simulated trials in which no class
was deleted (issue 8). Here the verdict is a test at level α (default 5 %):

**The gap statistic.** Let m_c be class c's mean confidence change (decision.py) over the classes that have
probes, the candidate c the most negative one (or the K most negative), and O the other classes. Then

    T_c = (center(m_O) − m_c) / (spread(m_O) · √(1 + 1/|O|))

with ``test="student"``: center = mean, spread = sample std — a Student-t prediction bound: when no class
was deleted and the classes' mean changes are iid Gaussian (whole-class shifts included), T_c of a fixed
class follows t with |O| − 1 degrees of freedom; ``test="robust"``: median and 1.4826·MAD;
``test="lower"``: the median and the semi-deviation below it, √(2·Σ min(0, m_o − median)² / (|O| − 1)) —
after a deletion the classes that absorb the deleted class's mass *rise*, which inflates a two-sided spread
and hides the drop (the "right class ranked first but no detectable change" of issue 8). T compares the
candidate's drop with the spread of the *other classes' drops*, so a drift that moves all classes does not
raise it.

**Thresholds** come from a registered calibrator (``CALIBRATORS``), each stating its level and how it got
its threshold (:class:`Calibration`, carried into every LabelGuess). Measured on 300 held-out null pairs per
generator (benchmarks/label_calibration.py; docs/label_inference.md), only thresholds from null pairs hold
5 %: the Gaussian ones gave 5–11 %, a fixed "3 spreads" 9–14 %. The default (``auto`` with ``student``
and log-odds) was chosen on the tuning half of that benchmark.

- ``student_t`` — analytic: the (1 − α/K) quantile of t_{|O|−1}, Bonferroni over the K classes with probes
  (the candidate is the minimum of K). Exact under iid Gaussian class drifts and top_k = 1; needs no data.
- ``null_pairs`` — measured: a conformal quantile of T over null pairs (θ_u with no class deleted). The
  marginal one, the ⌈(n + 1)(1 − α)⌉-th smallest of n null statistics, holds P(false detection) ≤ α for a
  new exchangeable null pair on average over calibration sets, whatever the drift's distribution (Vovk et
  al.; a rank test) — but one calibration set held 5.7 % on held-out nulls. The default is therefore the
  training-conditional rank (:func:`conformal_rank`): with probability ≥ 90 % over the draw of the null
  pairs the level holds (rank 291 of 300 at α = 5 %).
  The shipped table (``null_changes.json``) holds the class-mean changes of the null pairs of the tuning half
  of ``benchmarks/label_calibration.py``; :func:`calibrate_on_nulls` builds one from your own null pairs.
- ``gaussian`` — the exact (1 − α) quantile of T when the K classes' drifts are iid Gaussian, by Monte Carlo
  (T is location- and scale-free, so it depends only on K, top_k and the test); any test, no data needed.
- ``auto`` (the default) — ``null_pairs`` where the table has the probes' generator and statistic with the
  same number of classes, else ``gaussian``; the verdict names the one used.
- ``fixed`` — the threshold ``z`` you give; no level is claimed.
- ``own_nulls`` — null pairs of the audited model itself (:func:`calibrate_on_own_nulls`, made by
  ``own_nulls.calibrate_on_own_model`` where θ's weights and public rows are at hand): the only calibration
  whose level held on held-out architectures (3.6 % of 360 null pairs, where the shipped table gave 19.7 %).
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal, get_args

import torch
from scipy import stats

from unlearnleak.errors import ConfigError
from unlearnleak.registry import Registry

Test = Literal["student", "robust", "lower"]
TESTS: tuple[str, ...] = get_args(Test)
NULL_TABLE = "null_changes.json"


@dataclass(frozen=True)
class Gap:
    """The gap statistic of each candidate class against the other classes."""

    candidates: tuple[int, ...]
    values: tuple[float, ...]  # T_c per candidate (inf: the others do not move at all and c does)
    center: float  # center of the other classes' mean changes
    scale: float  # spread(m_O)·√(1 + 1/|O|), the unit of T
    num_others: int
    num_classes: int  # classes with probes


@dataclass(frozen=True)
class Calibration:
    """A threshold on T with the false-detection level it holds and how it was obtained.

    Attributes:
        method: the calibrator's registry name.
        level: the false-detection rate the threshold holds on null pairs (None: no level claimed).
        threshold: a candidate is detected when T > threshold.
        source: one line saying how the threshold was obtained.
        null_values: the sorted null statistics (``null_pairs``, ``gaussian``), for p-values.
    """

    method: str
    level: float | None
    threshold: float
    source: str
    null_values: tuple[float, ...] = ()
    bonferroni: int = 1  # analytic p-values: the number of classes the candidate was the minimum of
    df: int = 0
    class_center: tuple[float, ...] = ()  # own null pairs: each class's null mean change (μ_c) …
    class_scale: tuple[float, ...] = ()  # … and spread (σ_c) …
    coupling: tuple[tuple[float, ...], ...] = ()  # … how z_c follows the other classes' z on a null pair (W) …
    residual_scale: tuple[float, ...] = ()  # … and the spread of what it does not explain (s_c) …
    clip: tuple[float, ...] = ()  # … the largest |z_o| on a null pair: predictions never extrapolate beyond it
    # what making it took (own null pairs: pairs, public_rows, seconds, cached, computed_seconds); not its value
    cost: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def standardize(self, means: torch.Tensor) -> torch.Tensor:
        """The class changes the test is made on: with a per-model calibration the residual
        r_c = (z_c − Σ_o W_co·clip(z_o))/s_c of z_c = (m_c − μ_c)/σ_c, else m_c itself."""
        if not self.class_center:
            return means
        if len(self.class_center) != means.numel():
            raise ConfigError(f"the calibration was measured with {len(self.class_center)} classes, the probes "
                              f"have {means.numel()}")
        return _residuals(means.double()[None], self)[0]

    def p_value(self, t: float) -> float | None:
        """The test's p-value for statistic ``t`` (None for a ``fixed`` threshold)."""
        if self.null_values:  # sorted null statistics: the share at least as large (rank p-value)
            n = len(self.null_values)
            return (1 + n - bisect.bisect_left(self.null_values, t)) / (n + 1)
        if self.method == "student_t":
            if self.df < 1:
                return 1.0
            return min(1.0, self.bonferroni * float(stats.t.sf(t, self.df)))
        return None


def _residuals(means: torch.Tensor, cal: Calibration) -> torch.Tensor:
    """(n, K) class means → (n, K) residuals of the per-model calibration ``cal`` (Calibration.standardize)."""
    center = torch.tensor(cal.class_center, dtype=torch.float64)
    z = (torch.nan_to_num(means, nan=0.0) - center) / torch.tensor(cal.class_scale, dtype=torch.float64)
    w = torch.tensor(cal.coupling, dtype=torch.float64)
    bound = torch.tensor(cal.clip, dtype=torch.float64)
    clipped = torch.maximum(torch.minimum(z, bound), -bound)  # a deletion far outside the null range moves the
    return (z - clipped @ w.T) / torch.tensor(cal.residual_scale, dtype=torch.float64)  # others: no extrapolation


def gap_statistic(means: torch.Tensor, counts: torch.Tensor, candidates: Sequence[int], test: str = "student",
                  atol: float = 1e-9) -> Gap:
    """T_c for each candidate against the classes with probes that are not candidates (module docstring).

    A gap within ``atol`` (float rounding) gives T = 0; a real gap against others that do not spread at all
    gives T = inf.
    """
    if test not in TESTS:
        raise ConfigError(f"unknown test {test!r}; use one of {TESTS}")
    with_probes = [c for c in range(means.numel()) if int(counts[c]) > 0]
    others = [c for c in with_probes if c not in set(candidates)]
    m = means[others].double() if others else torch.zeros(0, dtype=torch.float64)
    center_t, spread_t = center_spread(m[None], test)
    center, spread = float(center_t[0]), float(spread_t[0])
    scale = spread * math.sqrt(1 + 1 / max(1, len(others)))
    values = []
    for c in candidates:
        gap = center - float(means[c])
        if gap <= atol or len(others) < 2:
            values.append(0.0)
        else:
            values.append(gap / scale if scale > 0 else math.inf)
    return Gap(tuple(candidates), tuple(values), center, scale, len(others), len(with_probes))


def center_spread(others: torch.Tensor, test: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Center and spread of each row of ``others`` (M, n): mean/std (``student``) or median/1.4826·MAD."""
    n = others.shape[1]
    if n == 0:
        zero = torch.zeros(others.shape[0], dtype=torch.float64)
        return zero, zero
    if test == "student":
        center = others.mean(dim=1)
        spread = others.std(dim=1, unbiased=True) if n >= 2 else torch.zeros_like(center)
    elif test == "robust":
        center = others.median(dim=1).values
        spread = 1.4826 * (others - center[:, None]).abs().median(dim=1).values
    else:  # "lower": the spread below the median only — classes that gain the deleted class's mass rise
        center = others.median(dim=1).values
        spread = (2 * (others - center[:, None]).clamp(max=0).pow(2).sum(dim=1) / max(1, n - 1)).sqrt()
    return center, spread


# -------------------------------------------------------------------------------------------- calibrators
Calibrator = Callable[..., Calibration]
CALIBRATORS: Registry[Calibrator] = Registry("calibration")


@CALIBRATORS.register("student_t")
def student_t(*, level: float, gap: Gap, test: str, **_: Any) -> Calibration:
    """The analytic threshold: t_{|O|−1} quantile at 1 − α/K (Bonferroni over the K classes with probes)."""
    if test != "student":
        raise ConfigError(f"the student_t calibration needs test='student' (the t distribution is that of the "
                          f"mean/std gap), got test={test!r}; use calibration='null_pairs' for {test!r}")
    df, k = gap.num_others - 1, max(1, gap.num_classes)
    if df < 1:
        return Calibration("student_t", level, math.inf, f"Student-t bound at level {level:g}: too few classes "
                           f"with probes ({gap.num_classes}) to estimate their spread; nothing can be detected",
                           bonferroni=k, df=df)
    threshold = float(stats.t.ppf(1 - level / k, df))
    return Calibration("student_t", level, threshold,
                       f"Student-t prediction bound, t_{df} quantile at 1 − {level:g}/{k} (Bonferroni over {k} "
                       f"classes); exact when the classes' drifts are iid Gaussian", bonferroni=k, df=df)


@CALIBRATORS.register("gaussian")
def gaussian(*, level: float, gap: Gap, test: str, top_k: int, **_: Any) -> Calibration:
    """The exact (1 − α) quantile of the statistic when the classes' drifts are iid Gaussian (Monte Carlo).

    T is location- and scale-free, so under iid Gaussian class drifts its distribution depends only on the
    number of classes, top_k and the test: it is simulated once (fixed seed) and cached.
    """
    values = _gaussian_null(gap.num_classes, min(top_k, gap.num_classes), test)
    n = len(values)
    rank = math.ceil((n + 1) * (1 - level))
    threshold = values[min(rank, n) - 1]
    return Calibration("gaussian", level, threshold,
                       f"{1 - level:.0%} quantile of T when {gap.num_classes} classes drift iid Gaussian "
                       f"({n:,} simulated null draws, test={test}, top_k={top_k}); real drifts have heavier "
                       f"tails (7–11 % false detections at 5 % on the benchmark's null pairs): calibrate on "
                       f"null pairs of your own model where you can", null_values=values)


GAUSSIAN_DRAWS = 40_000


@cache
def _gaussian_null(num_classes: int, top_k: int, test: str) -> tuple[float, ...]:
    """Sorted null statistics of ``GAUSSIAN_DRAWS`` pairs whose class means are iid N(0, 1)."""
    if num_classes - top_k < 2:
        return (math.inf,)
    g = torch.Generator().manual_seed(20240519)
    draws = torch.randn(GAUSSIAN_DRAWS, num_classes, generator=g, dtype=torch.float64).sort(dim=1).values
    others = draws[:, top_k:]
    center, spread = center_spread(others, test)
    scale = spread * math.sqrt(1 + 1 / others.shape[1])
    t = ((center[:, None] - draws[:, :top_k]) / scale[:, None]).amax(dim=1)
    return tuple(sorted(t.tolist()))


@CALIBRATORS.register("null_pairs")
def null_pairs(*, level: float, gap: Gap, test: str, statistic: str, generator: str, top_k: int,
               **_: Any) -> Calibration:
    """The conformal threshold from the shipped null pairs of the calibration benchmark."""
    table = _null_table()
    rows = table["changes"].get(generator, {}).get(statistic)
    if not rows:
        raise ConfigError(f"no null pairs measured for {generator!r} probes with statistic {statistic!r} "
                          f"(have: {sorted(table['changes'])}); use calibration='student_t', or "
                          f"calibrate_on_nulls() on null pairs of your own")
    null_means = [torch.tensor(r, dtype=torch.float64) for r in rows]
    if null_means[0].numel() != gap.num_classes:
        raise ConfigError(f"the shipped null pairs have {null_means[0].numel()} classes, this model "
                          f"{gap.num_classes}; use calibration='student_t' or calibrate_on_nulls()")
    setting = table.get("settings", {}).get(generator, table["setting"])  # a generator remeasured on its own
    return calibrate_on_nulls(null_means, level=level, test=test, top_k=top_k,
                              source=f"{setting} ({generator} probes, {statistic})")


@CALIBRATORS.register("auto")
def auto(*, statistic: str, generator: str, gap: Gap, **kwargs: Any) -> Calibration:
    """``null_pairs`` where the shipped table measured this generator and statistic with as many classes,
    else ``gaussian``; the Calibration's method and source say which one was used."""
    rows = _null_table()["changes"].get(generator, {}).get(statistic)
    if rows and len(rows[0]) == gap.num_classes:
        return null_pairs(statistic=statistic, generator=generator, gap=gap, **kwargs)
    return gaussian(gap=gap, **kwargs)


@CALIBRATORS.register("own_nulls")
def own_nulls(**_: Any) -> Calibration:
    """The audited model's own null pairs: built where θ's weights and public rows are at hand
    (``calibrate_on_own_model``; ``run`` does it for ``calibration: own_nulls``), never from the answers alone."""
    raise ConfigError("calibration 'own_nulls' needs θ's weights and public rows to make the model's own null "
                      "pairs (calibrate_on_own_model); a black-box user has neither: use calibration='auto'")


@CALIBRATORS.register("fixed")
def fixed(*, z: float, **_: Any) -> Calibration:
    """A threshold given by hand: no false-detection level is claimed."""
    return Calibration("fixed", None, z, f"fixed threshold T > {z:g}, not calibrated (no level claimed)")


NULL_CONFIDENCE = 0.9  # default confidence, over the draw of the calibration pairs, that the level holds


def conformal_rank(n: int, level: float, confidence: float | None = NULL_CONFIDENCE) -> int | None:
    """The rank (1-based) of the null statistic to use as threshold among n sorted ones; None: too few.

    ``confidence`` None: the marginal conformal rank ⌈(n + 1)(1 − level)⌉ — P(false detection) ≤ level on
    average over calibration sets, but a given set may hold a higher rate (the shipped table's held 5.7 % on
    the held-out nulls of one generator). Else the training-conditional rank (Vovk 2012): the smallest r
    with P(Beta(r, n + 1 − r) < 1 − level) ≤ 1 − confidence, i.e. with probability ≥ ``confidence`` over
    the draw of the n calibration pairs, the false-detection rate on new exchangeable nulls is ≤ level.
    """
    if confidence is None:
        rank = math.ceil((n + 1) * (1 - level))
        return rank if 1 <= rank <= n else None
    return next((r for r in range(max(1, math.ceil(n * (1 - level))), n + 1)
                 if stats.beta.cdf(1 - level, r, n + 1 - r) <= 1 - confidence), None)


def calibrate_on_nulls(null_means: Sequence[torch.Tensor], *, level: float = 0.05, test: str = "student",
                       top_k: int = 1, source: str = "null pairs",
                       confidence: float | None = NULL_CONFIDENCE) -> Calibration:
    """The conformal threshold from class-mean changes measured on null pairs (no class deleted).

    Args:
        null_means: per null pair, the (K,) mean change of each class (NaN for classes without probes),
            measured with the same probes' generator and statistic as the verdict that will use it.
        level: the false-detection rate to hold.
        confidence: hold the level with this probability over the draw of the null pairs (training-
            conditional; :func:`conformal_rank`); None: only on average (the marginal conformal quantile).

    Returns:
        A ``null_pairs`` Calibration: the :func:`conformal_rank`-th smallest null statistic (inf when there
        are too few null pairs for the level and confidence: then nothing is ever detected, and ``source``
        says so).
    """
    if confidence is not None and not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1) or be None, got {confidence}")
    values = sorted(null_statistic(m, test=test, top_k=top_k) for m in null_means)
    n = len(values)
    threshold, how, need = _conformal_threshold(values, level, confidence)
    return Calibration("null_pairs", level, threshold, f"{how} of T over {n} null pairs: {source}{need}",
                       null_values=tuple(values))


OWN_RIDGE = 0.1  # ridge of the coupling regression, per null pair, in units of the standardized changes


def calibrate_on_own_nulls(null_means: Sequence[torch.Tensor], *, level: float = 0.05, test: str = "student",
                           top_k: int = 1, source: str = "own null pairs", ridge: float = OWN_RIDGE,
                           confidence: float | None = NULL_CONFIDENCE) -> Calibration:
    """The per-model calibration: each class's change against what the model's own null pairs predict for it
    from the other classes' changes on the same pair; the gap of these residuals, at a conformal rank.

    On a null pair of this model (an update that deletes nothing) classes drift together: one more SGD step
    lowers some classes' probes and raises others' in a pattern of the model's own. Standardized per class
    (z_c = (m_c − μ_c)/σ_c) and regressed on the other classes' z (ridge), that pattern is what the null
    pairs predict for class c; a deletion moves c away from it (c drops, the classes that take its mass rise).
    The test is the gap statistic T on the residuals r_c = (z_c − Σ_o W_co·clip(z_o))/s_c (the other classes'
    z clipped to the largest |z| of the null pairs, so that a deletion far beyond any null pair, which moves the
    classes that absorb its mass far too, is not extrapolated into noise); the threshold the
    :func:`conformal_rank` of the null pairs' T, each computed with the calibration fitted *without* that
    pair (leave-one-out, so that calibration pairs and a new null pair are treated alike).

    Args:
        null_means: per null pair of the audited model itself (own_nulls.py), the (K,) class-mean changes.
        ridge: the coupling regression's penalty, per null pair (0: ordinary least squares).

    Returns:
        An ``own_nulls`` Calibration carrying μ, σ, W and s (``Calibration.standardize``).
    """
    k = null_means[0].numel() if null_means else 0
    if len(null_means) < k + 2:
        raise ConfigError(f"own null pairs: need at least {k + 2} (classes + 2) to fit each class's drift, got "
                          f"{len(null_means)}")
    table = torch.nan_to_num(torch.stack([m.double() for m in null_means]), nan=0.0)  # (n, K)
    n = table.shape[0]
    values = []
    for i in range(n):
        fitted = _fit_own(torch.cat([table[:i], table[i + 1:]]), ridge)
        values.append(null_statistic(_residuals(table[i:i + 1], fitted)[0], test=test, top_k=top_k))
    values.sort()
    threshold, how, need = _conformal_threshold(values, level, confidence)
    fit = _fit_own(table, ridge)
    return Calibration("own_nulls", level, threshold,
                       f"{how} of T on each class's change against the drift its own null pairs predict "
                       f"(leave-one-out) over {n} null pairs: {source}{need}", null_values=tuple(values),
                       class_center=fit.class_center, class_scale=fit.class_scale, coupling=fit.coupling,
                       residual_scale=fit.residual_scale, clip=fit.clip)


def _fit_own(table: torch.Tensor, ridge: float) -> Calibration:
    """μ, σ, W, s of :func:`calibrate_on_own_nulls` from (n, K) null class means (a Calibration carrying them)."""
    n, k = table.shape
    center = table.mean(dim=0)
    scale = table.std(dim=0, unbiased=True)
    positive = scale[scale > 0]
    floor = float(positive.min()) * 1e-3 if positive.numel() else 1.0
    scale = scale.clamp(min=max(floor, 1e-12))
    z = (table - center) / scale
    coupling = torch.zeros(k, k, dtype=torch.float64)
    residual = torch.ones(k, dtype=torch.float64)
    for c in range(k):
        others = [o for o in range(k) if o != c]
        x, y = z[:, others], z[:, c]
        w = torch.linalg.solve(x.T @ x + ridge * n * torch.eye(k - 1, dtype=torch.float64), x.T @ y)
        coupling[c, others] = w
        residual[c] = ((y - x @ w).pow(2).sum() / max(1, n - 1)).sqrt().clamp(min=1e-6)
    return Calibration("own_nulls", None, math.inf, "", class_center=tuple(center.tolist()),
                       class_scale=tuple(scale.tolist()), coupling=tuple(tuple(r) for r in coupling.tolist()),
                       residual_scale=tuple(residual.tolist()), clip=tuple(z.abs().amax(dim=0).tolist()))


def null_statistic(means: torch.Tensor, *, test: str = "student", top_k: int = 1) -> float:
    """The largest T among the top_k most negative classes of one pair (what a verdict compares)."""
    counts = (~torch.isnan(means)).long()
    have = [c for c in range(means.numel()) if counts[c]]
    have.sort(key=lambda c: (float(means[c]), c))
    gap = gap_statistic(torch.nan_to_num(means, nan=0.0), counts, have[:top_k], test)
    return max(gap.values, default=0.0)


@cache
def _null_table() -> dict[str, Any]:
    path = resources.files("unlearnleak.attacks.label_inference") / NULL_TABLE
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ConfigError(f"the null-pair table {NULL_TABLE} is missing from the package; reinstall, or use "
                          f"calibration='student_t'") from None


def calibrate(name: str, **kwargs: Any) -> Calibration:
    """The registered calibrator ``name`` applied to one decision's context."""
    return CALIBRATORS.get(name)(**kwargs)


def _conformal_threshold(values: list[float], level: float, confidence: float | None) -> tuple[float, str, str]:
    """The threshold on sorted null statistics ``values`` (their conformal rank for ``level``/``confidence``;
    inf when there are too few), how it was chosen, and what is missing (empty when nothing is)."""
    n = len(values)
    rank = conformal_rank(n, level, confidence)
    threshold = values[rank - 1] if rank is not None else math.inf
    how = (f"conformal {1 - level:.0%} quantile" if confidence is None else
           f"rank {rank} of {n} (level {level:g} held with {confidence:.0%} confidence over the null pairs)"
           if rank is not None else f"level {level:g} at {confidence:.0%} confidence")
    need = "" if rank is not None else "; too few null pairs for this level and confidence: nothing is detected"
    return threshold, how, need
