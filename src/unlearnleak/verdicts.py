"""The one rule that turns attack numbers into sentences (audit, recover, demo, console tables, HTML report).

A number alone misleads: 14.9 dB reads like a recovered photo until one sees that a 4×4 thumbnail of the photo
scores the same. Every verdict therefore compares the attack with the trivial baselines of
``unlearnleak.metrics.baselines`` and names the highest one it beats by more than :data:`MARGIN_DB`:

=====================  ==========================================================================  ======
level                  the attack's PSNR is …                                                      leaked
=====================  ==========================================================================  ======
``beyond_thumbnail``   above the photo's 4×4 thumbnail                                             yes
``thumbnail``          above the photo's own mean colour, not above its thumbnail                  no
``own_colour``         above the dataset's mean colour, not above the photo's own mean colour      no
``nothing``            not above the dataset's mean colour (or its own, when the dataset's is      no
                       unknown)
=====================  ==========================================================================  ======

"Above" means by more than the margin; within it the attack is "at" the baseline. PSNR weighs colour errors
most, so an attack *at* the thumbnail's PSNR whose SSIM is higher by :data:`SSIM_MARGIN` and LPIPS lower by
:data:`LPIPS_MARGIN` than the thumbnail's has recovered structure the thumbnail lacks: also ``beyond_thumbnail``.
Tabular rows use the PSNR margin on the MSE ratio to the feature-mean row. Labels get one phrase everywhere
(:func:`label_verdict`). docs/metrics.md, "Verdicts", states the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

MARGIN_DB = 0.5  # closer than this (in PSNR, or 10·log10 of an MSE ratio) counts as "at" the baseline
SSIM_MARGIN = 0.1  # at the thumbnail's PSNR, structure beyond it needs SSIM this much higher …
LPIPS_MARGIN = 0.1  # … and LPIPS this much lower than the thumbnail's

Relation = Literal["above", "at", "below"]

# What each baseline is, in words (keys: unlearnleak.metrics.baselines.BASELINE_NAMES, and feature_mean).
BASELINE_WORDS = {"dataset_mean_colour": "the dataset's mean colour",
                  "own_mean_colour": "the photo's own mean colour",
                  "thumbnail_4x4": "a 4×4 thumbnail of the photo",
                  "feature_mean": "the feature-mean row"}
LEVEL_HEADS: dict[str, str] = {
    "beyond_thumbnail": "recovers more than a 4×4 thumbnail of the photo",
    "thumbnail": "colour layout only (thumbnail level)",
    "own_colour": "the photo's overall colour only",
    "nothing": "nothing beyond the dataset's mean colour",
    "rows": "recovers the deleted rows beyond the feature means",
    "no_rows": "nothing beyond the feature means",
}


def relation(value: float, baseline: float, margin: float = MARGIN_DB) -> Relation:
    """``value`` against ``baseline`` (both in dB): above / at (within ``margin``) / below."""
    if value > baseline + margin:
        return "above"
    if value < baseline - margin:
        return "below"
    return "at"


@dataclass(frozen=True)
class Verdict:
    """A verdict: its level, whether it counts as a leak, the short head, the numbers behind it, and the
    baselines the attack scores below (by more than the margin)."""

    level: str
    leaked: bool
    head: str
    detail: str = ""
    below: tuple[str, ...] = ()

    @property
    def sentence(self) -> str:
        """``head: detail`` — the one line every output prints."""
        return f"{self.head}: {self.detail}" if self.detail else self.head

    def __str__(self) -> str:
        return self.sentence


def _db(value: float) -> str:
    return "+inf dB" if math.isinf(value) else f"{value:.2f} dB"


def _number(value: Any) -> float | None:
    """A real number (inf allowed), or None for None, NaN, booleans and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def _metric(value: Any, key: str) -> float | None:
    """A baseline's ``key`` metric: ``value`` is a number (its PSNR) or a dict of metrics."""
    if isinstance(value, Mapping):
        return _number(value.get(key))
    return _number(value) if key == "psnr" else None


def structure_beyond(ssim: float | None, lpips: float | None, thumbnail: Any) -> bool:
    """Whether the recovery has structure a 4×4 thumbnail lacks: SSIM higher by :data:`SSIM_MARGIN` *and* LPIPS
    lower by :data:`LPIPS_MARGIN` than the thumbnail's (both needed; without LPIPS, never)."""
    t_ssim, t_lpips = _metric(thumbnail, "ssim"), _metric(thumbnail, "lpips")
    s, lp = _number(ssim), _number(lpips)
    if None in (s, lp, t_ssim, t_lpips):
        return False
    return s > t_ssim + SSIM_MARGIN and lp < t_lpips - LPIPS_MARGIN  # type: ignore[operator]


def image_verdict(psnr: float | None, baselines: Mapping[str, Any], *, ssim: float | None = None,
                  lpips: float | None = None, margin: float = MARGIN_DB,
                  interval: tuple[float, float] | None = None) -> Verdict | None:
    """The verdict on an image attack's mean PSNR (and SSIM, LPIPS) beside its baselines' (None when unscored).

    Args:
        baselines: baseline name (``dataset_mean_colour``, ``own_mean_colour``, ``thumbnail_4x4``; any may be
            missing: the verdict then uses those present) → its PSNR in dB, or a dict with ``psnr`` and, for the
            thumbnail, ``ssim`` and ``lpips``.
        ssim, lpips: the attack's; with the thumbnail's, they can show structure beyond it at equal PSNR.
        interval: an optional 95 % interval of the attack's PSNR, shown beside it.
    """
    p = _number(psnr)
    if p is None:
        return None
    known = {name: _metric(baselines.get(name), "psnr") for name in ("dataset_mean_colour", "own_mean_colour",
                                                                    "thumbnail_4x4")}
    present = {name: value for name, value in known.items() if value is not None}
    shown = f"PSNR {_db(p)}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")
    below = tuple(n for n, b in present.items() if relation(p, b, margin) == "below")
    if not present:
        return Verdict("unrated", False, "no verdict", f"{shown}, no baseline to compare with")
    flat, own, thumb = known["dataset_mean_colour"], known["own_mean_colour"], known["thumbnail_4x4"]
    compared = ", ".join(f"{b:.2f} for {BASELINE_WORDS[n]}" for n, b in reversed(present.items()))
    detail = f"{shown} vs {compared}"
    if below:
        detail += "; below " + _and([BASELINE_WORDS[n] for n in reversed(below)])
    if thumb is not None and relation(p, thumb, margin) == "above":
        return Verdict("beyond_thumbnail", True, LEVEL_HEADS["beyond_thumbnail"], detail + " — detail of the "
                       "deleted photo leaked", below)
    thumbnail = baselines.get("thumbnail_4x4")
    if thumb is not None and relation(p, thumb, margin) == "at" and structure_beyond(ssim, lpips, thumbnail):
        return Verdict("beyond_thumbnail", True, LEVEL_HEADS["beyond_thumbnail"],
                       f"{detail}; at the thumbnail's PSNR but with structure it lacks: SSIM {ssim:.2f} vs "
                       f"{_metric(thumbnail, 'ssim'):.2f}, LPIPS {lpips:.2f} vs {_metric(thumbnail, 'lpips'):.2f} "
                       "(lower is closer) — detail of the deleted photo leaked", below)
    if own is not None and relation(p, own, margin) == "above":
        if thumb is None:
            return Verdict("thumbnail", False, "more than the photo's overall colour (no thumbnail to compare)",
                           detail, below)
        return Verdict("thumbnail", False, LEVEL_HEADS["thumbnail"], detail, below)
    if flat is not None and relation(p, flat, margin) == "above":
        head = LEVEL_HEADS["own_colour"] if own is not None else \
            "something of the photo beyond the dataset's mean colour (no thumbnail to compare)"
        return Verdict("own_colour", False, head, detail, below)
    head = LEVEL_HEADS["nothing"] if flat is not None else "nothing beyond the photo's own mean colour"
    return Verdict("nothing", False, head, detail, below)


def _and(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def tabular_verdict(mse: float | None, feature_mean_mse: float | None, *,
                    margin: float = MARGIN_DB) -> Verdict | None:
    """The verdict on recovered tabular rows: their MSE against the feature-mean row's, with the same margin
    applied to 10·log10 of the ratio (None when unscored)."""
    m = _number(mse)
    if m is None:
        return None
    base = _number(feature_mean_mse)
    if base is None:
        return Verdict("unrated", False, "no verdict", f"MSE {m:.3g}, no feature-mean row to compare with")
    gain = math.inf if m == 0 else (10 * math.log10(base / m) if base > 0 else -math.inf)
    rel = relation(gain, 0.0, margin)
    detail = f"MSE {m:.3g} vs {base:.3g} for the feature-mean row"
    if rel == "above":
        return Verdict("rows", True, LEVEL_HEADS["rows"], detail + " — the deleted rows leaked")
    if rel == "below":
        return Verdict("nothing", False, LEVEL_HEADS["no_rows"],
                       detail + "; worse than the feature-mean row", ("feature_mean",))
    return Verdict("nothing", False, LEVEL_HEADS["no_rows"], detail)


def gradient_label_phrase(accuracy: float | None, k: int | None = None, chance: float | None = None) -> str | None:
    """The labels the server reads from the weight change ∇* (before any image is made), in words."""
    if accuracy is None or (isinstance(accuracy, float) and math.isnan(accuracy)):
        return None
    if k:
        right = round(accuracy * k)
        text = f"labels read from the weight change: {right} of {k} right"
    else:
        text = f"labels read from the weight change: {accuracy:.0%} right"
    return text + (f" (chance {chance:.2f})" if chance is not None else "")


def feature_recovery_verdict(fr: Mapping[str, Any] | None) -> Verdict | None:
    """The verdict of a run row's ``feature_recovery`` entry (or a dict of the same shape): mean metric vs its
    baselines' means (rows written before the baselines were renamed call the dataset's ``mean_colour``)."""
    if not fr:
        return None
    metrics = fr.get("metrics") or {}
    raw = fr.get("baselines") or {}
    baselines = {("dataset_mean_colour" if k == "mean_colour" else k): v for k, v in raw.items()}
    if fr.get("image", "psnr" in metrics):
        return image_verdict(metrics.get("psnr"), {k: v or {} for k, v in baselines.items()},
                             ssim=metrics.get("ssim"), lpips=metrics.get("lpips"))
    return tabular_verdict(metrics.get("mse"), (baselines.get("feature_mean") or {}).get("mse"))


def _name(c: int, names: Sequence[str] | None) -> str:
    """``3 (cat)``; just ``3`` without names or where the name is the number (digits)."""
    if names is None or not 0 <= c < len(names) or str(names[c]) == str(c):
        return str(c)
    return f"{c} ({names[c]})"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def label_verdict(guess: Mapping[str, Any], class_names: Sequence[str] | None = None,
                  deleted: Sequence[int] | None = None) -> Verdict:
    """One phrase for label inference everywhere: the argmin class (largest confidence drop), whether the drop
    is significant (p-value and level when known), the queries, and — with ground truth — right or wrong.

    ``guess``: a ``LabelGuess.to_dict()``, a run row's ``label_inference`` entry or the audit's section. Used
    when present: a verdict state (``state`` or ``verdict``: detected | not_detected | no_verdict), the classes
    lacking probes (``lacking`` or ``classes_without_probes``), the fewest probes a class needs
    (``min_per_class``), why classes lack them (``reason``) and the deleted class's ``rank``.
    """
    best = guess.get("best")
    if best is None and guess.get("ranked"):
        best = guess["ranked"][0]
    state = str(guess.get("state") or guess.get("verdict") or "").strip().lower().replace(" ", "_").replace("-", "_")
    lacking = list(guess.get("lacking") or guess.get("classes_without_probes") or [])
    counts = guess.get("probe_counts")
    if not lacking and isinstance(counts, list | tuple):  # today's guesses: the classes no probe landed in
        lacking = [c for c, n in enumerate(counts) if n == 0]
    if state not in ("detected", "not_detected", "no_verdict"):
        # no significant drop among the probed classes says nothing about the classes nobody probed
        state = "detected" if guess.get("detected") else "no_verdict" if lacking else "not_detected"
    changes = guess.get("changes") or guess.get("confidence_changes") or []
    change = _number(changes[best]) if isinstance(best, int) and 0 <= best < len(changes) else None
    statistic = str(guess.get("statistic") or "log_odds").replace("_", "-")
    what = "the smallest confidence change" if change is not None and change > 0 else "the largest confidence drop"
    cls = f"class {_name(best, class_names)}" if isinstance(best, int) else "no class"
    predicted = [c for c in guess.get("predicted") or [] if isinstance(c, int)]
    if state == "detected":
        named = ", ".join(_name(c, class_names) for c in predicted) if len(predicted) > 1 else None
        head = f"label leaked: classes {named} were deleted" if named else f"label leaked: {cls} was deleted"
        lead = f"{what}, significant"
    elif state == "no_verdict":
        reason = str(guess.get("reason") or "")
        # no class lacks probes but a reason is given: the decision had too few classes to test (it says so)
        head = "no verdict on the label" if not lacking and reason else \
            f"no verdict on the label: {_lacking_phrase(lacking, class_names, guess.get('min_per_class'))}"
        # a guess that ranked nothing (today's decision) says so; an older one names its argmin among the others
        lead = "; ".join([*([reason] if reason else []),
                          "nothing was ranked or tested" if best is None else f"among the others {cls} has {what}"])
    else:
        head = f"no label leak shown: {what}, {cls}, is not significant"
        lead = ""
    parts = [lead] if lead else []
    if change is not None:
        parts.append(f"{'rose' if change > 0 else 'fell'} by {abs(change):.3g} {statistic}")
    p, level = _number(guess.get("p_value")), _number(guess.get("level"))
    # no verdict: no threshold was made, so nothing is calibrated (own null pairs are not even made then)
    calibrated = "" if state == "no_verdict" else CALIBRATION_WORDS.get(str(guess.get("calibration") or ""), "")
    if p is not None:
        parts.append(f"p = {p:.2g}" + (f" at level {level:g}" if level is not None else "") + calibrated)
    elif level is not None:
        parts.append(f"level {level:g}" + calibrated)
    qo, qu = guess.get("queries_original"), guess.get("queries_unlearned")
    if qo is not None or qu is not None:
        parts.append(f"queries: {qo if qo is not None else '?'} to θ, {qu if qu is not None else '?'} to θ_u")
    truth = [int(d) for d in (deleted if deleted is not None else guess.get("deleted") or [])]
    if truth and isinstance(best, int):
        names = ", ".join(_name(d, class_names) for d in truth)
        if best in truth:
            parts.append(f"right: class {names} was deleted")
        else:
            rank = guess.get("rank")
            ranked = list(guess.get("ranked") or [])
            if rank is None and truth[0] in ranked:
                rank = ranked.index(truth[0]) + 1
            parts.append(f"wrong: class {names} was deleted" + (f", ranked {_ordinal(int(rank))}" if rank else ""))
    return Verdict(state, state == "detected", head, "; ".join(parts))


# what a label verdict's level rests on, by calibrator (calibration.CALIBRATORS): only the model's own null pairs
# hold it for this model; a threshold from other models' null pairs or a Gaussian law does not carry over (one
# more SGD step "detected" a class in 47 % of a ResNet-18's null pairs with the shipped LeNet table)
CALIBRATION_WORDS = {
    "own_nulls": " (calibrated on this model's own null pairs)",
    "null_pairs": " (calibrated on other models' null pairs: not guaranteed for this one)",
    "gaussian": " (assuming classes drift alike: not guaranteed for this model)",
    "student_t": " (assuming classes drift alike: not guaranteed for this model)",
}


def _lacking_phrase(lacking: Sequence[int], class_names: Sequence[str] | None, min_per_class: Any) -> str:
    """``class 4 (e) has fewer than 3 probes`` / ``classes 5, 7 got no probes`` / ``too few probes``."""
    if not lacking:
        return "too few probes"
    which = f"class{'es' if len(lacking) > 1 else ''} {', '.join(_name(int(c), class_names) for c in lacking)}"
    least = _number(min_per_class)
    if least is not None and least > 1:
        return f"{which} {'have' if len(lacking) > 1 else 'has'} fewer than {int(least)} probes"
    return f"{which} got no probes"


def label_summary(guesses: Sequence[Mapping[str, Any]], class_names: Sequence[str] | None = None) -> str | None:
    """Label inference over several cells (seeds) in words: how often the argmin class was a deleted one (beside
    chance) and how often the drop was significant; one cell: its :func:`label_verdict`."""
    guesses = [g for g in guesses if g]
    if not guesses:
        return None
    if len(guesses) == 1:
        return label_verdict(guesses[0], class_names).sentence
    silent = [g for g in guesses if label_verdict(g).level == "no_verdict"]  # nothing tested: neither way
    if len(silent) == len(guesses):
        lacking = sorted({int(c) for g in silent for c in (g.get("lacking") or [])})
        return (f"no verdict in any of {len(guesses)} cells: "
                f"{_lacking_phrase(lacking, class_names, silent[0].get('min_per_class'))}")
    guesses = [g for g in guesses if label_verdict(g).level != "no_verdict"]
    n = len(guesses)
    significant = sum(1 for g in guesses if label_verdict(g).leaked)
    scored = [g for g in guesses if g.get("correct") is not None]
    chance = [float(g["chance"]) for g in guesses if isinstance(g.get("chance"), int | float)]
    parts = []
    if scored:
        right = sum(1 for g in scored if g.get("correct"))
        parts.append(f"the largest confidence drop was a deleted class in {right} of {len(scored)} cells"
                     + (f" (chance {sum(chance) / len(chance):.2f})" if chance else ""))
    parts.append(f"significant in {significant} of {n}")
    head = "label leaked" if significant else "no label leak shown"
    if significant and significant < n:
        head = f"label leaked in {significant} of {n} cells"
    if silent:
        parts.append(f"{len(silent)} more cell{'s' if len(silent) > 1 else ''} without a verdict (too few probes)")
    return f"{head}: {'; '.join(parts)}"
