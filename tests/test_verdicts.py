"""The one verdict rule (unlearnleak.verdicts) on constructed results at, above and below each baseline."""

from __future__ import annotations

import math

import pytest

from unlearnleak.verdicts import (
    MARGIN_DB,
    feature_recovery_verdict,
    gradient_label_phrase,
    image_verdict,
    label_summary,
    label_verdict,
    relation,
    tabular_verdict,
)

# The nesting every real photo has: dataset mean colour ≤ own mean colour ≤ 4×4 thumbnail (each is the best
# image of its family in MSE, and each family contains the one before).
BASE = {"dataset_mean_colour": 12.0, "own_mean_colour": 14.0, "thumbnail_4x4": 17.0}
OVER = 2 * MARGIN_DB  # clearly beyond the margin
UNDER = MARGIN_DB / 2  # within the margin: "at"


@pytest.mark.parametrize(("psnr", "level", "leaked"), [
    (BASE["thumbnail_4x4"] + OVER, "beyond_thumbnail", True),
    (BASE["thumbnail_4x4"] + UNDER, "thumbnail", False),  # at the thumbnail: never a leak
    (BASE["thumbnail_4x4"], "thumbnail", False),
    (BASE["thumbnail_4x4"] - OVER, "thumbnail", False),  # between own colour and thumbnail
    (BASE["own_mean_colour"] + UNDER, "own_colour", False),  # at its own mean colour
    (BASE["own_mean_colour"] - OVER, "own_colour", False),  # between the two mean colours
    (BASE["dataset_mean_colour"] + UNDER, "nothing", False),  # at the dataset's mean colour
    (BASE["dataset_mean_colour"] - OVER, "nothing", False),  # below everything
    (math.inf, "beyond_thumbnail", True),  # an exact reconstruction
])
def test_image_levels_at_above_and_below_each_baseline(psnr: float, level: str, leaked: bool) -> None:
    verdict = image_verdict(psnr, BASE)
    assert verdict is not None and verdict.level == level and verdict.leaked is leaked
    assert ("leaked" in verdict.sentence) is leaked


def test_thumbnail_level_similarity_is_never_called_a_leak() -> None:
    # the audit's old wording: "IMAGE LEAKED: PSNR 14.93 dB vs 14.93 dB for a 4×4 thumbnail"
    verdict = image_verdict(14.93, {"dataset_mean_colour": 11.0, "own_mean_colour": 12.5, "thumbnail_4x4": 14.93})
    assert verdict is not None and not verdict.leaked
    assert verdict.head == "colour layout only (thumbnail level)"
    assert "14.93 dB vs 14.93 for a 4×4 thumbnail" in verdict.sentence


def test_the_sentence_says_which_baselines_the_attack_is_below() -> None:
    verdict = image_verdict(BASE["dataset_mean_colour"] - OVER, BASE)
    assert verdict is not None
    assert verdict.below == ("dataset_mean_colour", "own_mean_colour", "thumbnail_4x4")
    assert verdict.head == "nothing beyond the dataset's mean colour"
    assert "below a 4×4 thumbnail of the photo, the photo's own mean colour and the dataset's mean colour" in \
        verdict.sentence
    between = image_verdict(BASE["own_mean_colour"] + OVER, BASE)
    assert between is not None and between.below == ("thumbnail_4x4",)
    assert "below a 4×4 thumbnail of the photo" in between.sentence and "dataset" not in between.sentence.split(
        "below")[-1]
    above = image_verdict(BASE["thumbnail_4x4"] + OVER, BASE)
    assert above is not None and above.below == () and "below" not in above.sentence


def test_missing_baselines_and_missing_scores() -> None:
    assert image_verdict(None, BASE) is None and image_verdict(float("nan"), BASE) is None
    unrated = image_verdict(15.0, {})
    assert unrated is not None and unrated.level == "unrated" and not unrated.leaked
    only_flat = image_verdict(13.0, {"dataset_mean_colour": 12.0})
    assert only_flat is not None and only_flat.level == "own_colour" and "no thumbnail" in only_flat.head
    no_flat = image_verdict(14.0, {"own_mean_colour": 14.0, "thumbnail_4x4": 17.0})
    assert no_flat is not None and no_flat.head == "nothing beyond the photo's own mean colour"


def test_relation_is_symmetric_around_the_margin() -> None:
    assert relation(10 + OVER, 10) == "above" and relation(10 - OVER, 10) == "below"
    assert relation(10 + UNDER, 10) == relation(10 - UNDER, 10) == relation(10, 10) == "at"


@pytest.mark.parametrize(("mse", "level", "leaked", "below"), [
    (1e-9, "rows", True, ()),  # the closed form: exact
    (0.35, "rows", True, ()),  # 10·log10(0.5 / 0.35) = 1.5 dB better than the feature means
    (0.5, "nothing", False, ()),  # at the feature means
    (0.5 * 1.05, "nothing", False, ()),  # within the margin, worse
    (1.0, "nothing", False, ("feature_mean",)),  # clearly worse
])
def test_tabular_rows_against_the_feature_mean(mse: float, level: str, leaked: bool, below: tuple[str, ...]) -> None:
    base = 0.5
    verdict = tabular_verdict(mse, base)
    assert verdict is not None
    assert verdict.level == level and verdict.leaked is leaked and verdict.below == below
    assert verdict.leaked is (10 * math.log10(base / mse) > MARGIN_DB)
    assert tabular_verdict(None, base) is None
    assert tabular_verdict(0.1, None).level == "unrated"  # type: ignore[union-attr]


GUESS = {"best": 3, "ranked": [3, 1, 0, 2], "changes": [0.02, -0.2, 0.01, -1.6], "detected": False,
         "p_value": 0.31, "level": 0.05, "queries_original": 500, "queries_unlearned": 50, "statistic": "log_odds"}
NAMES = ["airplane", "automobile", "bird", "cat"]


def test_label_phrase_not_significant_states_argmin_p_value_queries_and_no_double_negative() -> None:
    verdict = label_verdict(GUESS, NAMES, [3])
    text = verdict.sentence
    assert not verdict.leaked and verdict.level == "not_detected"
    assert text.startswith("no label leak shown: the largest confidence drop, class 3 (cat), is not significant")
    assert "fell by 1.6 log-odds" in text and "-1.6" not in text
    assert "p = 0.31 at level 0.05" in text and "queries: 500 to θ, 50 to θ_u" in text
    assert "right: class 3 (cat) was deleted" in text


def test_label_phrase_says_what_the_level_rests_on() -> None:
    """Only the model's own null pairs hold the level for this model; the phrase says which calibration it used."""
    own = label_verdict({**GUESS, "detected": True, "p_value": 0.004, "calibration": "own_nulls"}).sentence
    assert "p = 0.004 at level 0.05 (calibrated on this model's own null pairs)" in own
    shipped = label_verdict({**GUESS, "calibration": "null_pairs"}).sentence
    assert "(calibrated on other models' null pairs: not guaranteed for this one)" in shipped
    assert "not guaranteed" in label_verdict({**GUESS, "calibration": "gaussian"}).sentence
    assert "calibrated" not in label_verdict({**GUESS, "calibration": "fixed", "level": None}).sentence


def test_label_phrase_detected_wrong_and_ranked() -> None:
    detected = label_verdict({**GUESS, "detected": True, "p_value": 0.002})
    assert detected.leaked and detected.head == "label leaked: class 3 was deleted"
    wrong = label_verdict(GUESS, deleted=[0])
    assert "wrong: class 0 was deleted, ranked 3rd" in wrong.sentence
    rose = label_verdict({**GUESS, "changes": [0.0, 0.1, 0.2, 0.05]})
    assert "the smallest confidence change" in rose.sentence and "rose by 0.05 log-odds" in rose.sentence


def test_label_phrase_uses_the_richer_fields_when_a_guess_has_them() -> None:
    no_verdict = label_verdict({**GUESS, "state": "no_verdict", "lacking": [5, 7], "rank": 2}, deleted=[1])
    assert no_verdict.level == "no_verdict" and not no_verdict.leaked
    assert no_verdict.head == "no verdict on the label: classes 5, 7 got no probes"
    assert "ranked 2nd" in no_verdict.sentence
    unprobed = label_verdict({**GUESS, "probe_counts": [3, 3, 0, 3]})  # today's guesses: counts per class
    assert unprobed.level == "no_verdict" and unprobed.head == "no verdict on the label: class 2 got no probes"
    seen = label_verdict({**GUESS, "detected": True, "probe_counts": [3, 3, 0, 3]})
    assert seen.leaked  # a significant drop is evidence whatever the unprobed classes did
    by_state = label_verdict({**GUESS, "detected": False, "verdict": "detected"})
    assert by_state.leaked  # an explicit state wins over the boolean
    bare = label_verdict({"ranked": [4], "changes": [None] * 4 + [-0.3]})
    assert bare.sentence == ("no label leak shown: the largest confidence drop, class 4, is not significant: "
                             "fell by 0.3 log-odds")


def test_label_summary_over_seeds_and_the_gradient_label_phrase() -> None:
    cells = [{**GUESS, "correct": True, "chance": 0.1}, {**GUESS, "correct": False, "chance": 0.1},
             {**GUESS, "correct": True, "chance": 0.1, "detected": True}]
    text = label_summary(cells)
    assert text == ("label leaked in 1 of 3 cells: the largest confidence drop was a deleted class in 2 of 3 "
                    "cells (chance 0.10); significant in 1 of 3")
    assert label_summary([GUESS]) == label_verdict(GUESS).sentence and label_summary([]) is None
    silent = {**GUESS, "verdict": "no_verdict", "lacking": [4], "min_per_class": 3, "ranked": []}
    # cells without a verdict are neither "leaked" nor "no leak shown": counted apart, and all of them say so
    assert label_summary([silent, silent]) == "no verdict in any of 2 cells: class 4 has fewer than 3 probes"
    mixed = label_summary([*cells, silent])
    assert mixed is not None and mixed.endswith("significant in 1 of 3; 1 more cell without a verdict (too few "
                                                "probes)")
    assert gradient_label_phrase(1.0, 1) == "labels read from the weight change: 1 of 1 right"
    assert gradient_label_phrase(0.75, 4, 0.1) == "labels read from the weight change: 3 of 4 right (chance 0.10)"
    assert gradient_label_phrase(None) is None


def test_a_run_rows_feature_recovery_entry_gets_the_same_verdict() -> None:
    row = {"image": True, "metrics": {"psnr": 11.4, "label_accuracy": 1.0},
           "baselines": {"mean_colour": {"psnr": 12.7}, "own_mean_colour": {"psnr": 13.5},
                         "thumbnail_4x4": {"psnr": 16.0}}}  # an old row: "mean_colour" is the dataset's
    verdict = feature_recovery_verdict(row)
    assert verdict is not None and verdict.level == "nothing" and "dataset_mean_colour" in verdict.below
    assert "below a 4×4 thumbnail of the photo, the photo's own mean colour and the dataset's mean colour" in \
        verdict.sentence
    tabular = feature_recovery_verdict({"image": False, "metrics": {"mse": 1e-8},
                                        "baselines": {"feature_mean": {"mse": 0.7}}})
    assert tabular is not None and tabular.leaked
    assert feature_recovery_verdict(None) is None


def test_at_the_thumbnails_psnr_structure_beyond_it_is_a_leak_only_with_both_ssim_and_lpips() -> None:
    thumb = {"psnr": 17.97, "ssim": 0.15, "lpips": 0.30}
    base = {"dataset_mean_colour": {"psnr": 15.44}, "own_mean_colour": {"psnr": 17.30}, "thumbnail_4x4": thumb}
    # measured on the README's pair: PSNR at the thumbnail's, SSIM and LPIPS far beyond it
    seen = image_verdict(17.98, base, ssim=0.50, lpips=0.057)
    assert seen is not None and seen.leaked and seen.level == "beyond_thumbnail"
    assert "SSIM 0.50 vs 0.15, LPIPS 0.06 vs 0.30" in seen.sentence
    for ssim, lpips in ((0.50, None), (0.50, 0.25), (0.20, 0.05), (None, 0.05)):  # one short, or LPIPS unknown
        verdict = image_verdict(17.98, base, ssim=ssim, lpips=lpips)
        assert verdict is not None and not verdict.leaked and verdict.level == "thumbnail", (ssim, lpips)
    below = image_verdict(17.97 - 2 * MARGIN_DB, base, ssim=0.9, lpips=0.01)
    assert below is not None and not below.leaked  # below the thumbnail's PSNR: structure does not outvote it
    assert image_verdict(17.98, {"thumbnail_4x4": 17.97, "own_mean_colour": 17.3}, ssim=0.5, lpips=0.05) \
        .level == "thumbnail"  # type: ignore[union-attr]  # the thumbnail's SSIM/LPIPS unknown


def test_class_names_that_are_the_numbers_are_not_repeated() -> None:
    digits = [str(c) for c in range(10)]
    text = label_verdict({**GUESS, "changes": [0.0] * 3 + [-0.5] + [0.0] * 6}, digits, [3]).sentence
    assert "class 3 (3)" not in text and "right: class 3 was deleted" in text
