"""Image and tabular metrics: hand-computed values, scikit-image parity, the official PSNR variant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from unlearnleak.errors import ConfigError
from unlearnleak.metrics import (
    MetricInputError,
    feature_errors,
    image_metrics,
    label_accuracy,
    match_by_mse,
    mse,
    psnr,
    psnr_std_scaled,
    ssim,
)

CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _images(k: int = 3, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(k, c, size, size, generator=torch.Generator().manual_seed(seed))


def _noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return (x + sigma * noise).clamp(0, 1)


def test_psnr_of_a_constant_offset_is_hand_computable() -> None:
    ref = torch.full((2, 3, 4, 4), 0.4, dtype=torch.float64)
    x = ref + 0.1  # MSE = 0.01 -> PSNR = 10·log10(1 / 0.01) = 20 dB
    assert mse(x, ref).tolist() == pytest.approx([0.01, 0.01], abs=1e-15)
    assert psnr(x, ref).tolist() == pytest.approx([20.0, 20.0], abs=1e-9)
    assert psnr(x, ref, peak=0.5).tolist() == pytest.approx([20 - 20 * math.log10(2)] * 2, abs=1e-9)
    assert psnr(x, ref).dtype == torch.float64 and psnr(x, ref).shape == (2,)


def test_psnr_is_per_sample_and_infinite_for_identical_images() -> None:
    ref = torch.zeros(2, 1, 4, 4)
    x = ref.clone()
    x[1] = 0.5  # sample 0 identical, sample 1 off by 0.5 everywhere
    assert mse(x, ref).tolist() == [0.0, 0.25]
    values = psnr(x, ref)
    assert math.isinf(values[0]) and values[0] > 0
    assert values[1].item() == pytest.approx(10 * math.log10(4))


def _official_psnr(img_batch: torch.Tensor, ref_batch: torch.Tensor, factor: torch.Tensor) -> list[float]:
    """The official code's ``metrics.psnr(..., factor=1/ds)`` per sample (its loop without the final mean)."""
    out = []
    for img, ref in zip(img_batch, ref_batch, strict=True):
        sample_mse = ((img - ref) ** 2).mean()
        out.append((10 * torch.log10(factor**2 / sample_mse)).mean().item())
    return out


def test_std_scaled_psnr_adds_the_log_of_the_inverse_std() -> None:
    ref = torch.full((2, 3, 8, 8), 0.25, dtype=torch.float64)
    x = ref + 0.05  # uniform error
    expected = psnr(x, ref) + sum(20 * math.log10(1 / s) for s in CIFAR10_STD) / 3
    assert psnr_std_scaled(x, ref, CIFAR10_STD).tolist() == pytest.approx(expected.tolist(), abs=1e-9)
    inflation = (psnr_std_scaled(x, ref, CIFAR10_STD) - psnr(x, ref)).tolist()
    assert inflation == pytest.approx([12.0] * 2, abs=0.2)  # the ≈ +12 dB documented in docs/metrics.md


def test_std_scaled_psnr_matches_the_official_formula_on_uneven_errors() -> None:
    ref = _images(3, 3, 8, seed=2).double()
    x = _noisy(ref, 0.1).double()
    x[:, 0] = ref[:, 0]  # errors differ by channel
    ds = torch.tensor(CIFAR10_STD, dtype=torch.float64)[:, None, None]
    assert psnr_std_scaled(x, ref, CIFAR10_STD).tolist() == pytest.approx(_official_psnr(x, ref, 1 / ds))


@pytest.mark.parametrize("std", [(0.2, 0.2), (0.2, -0.1, 0.3), (0.2, 0.0, 0.3)])
def test_std_scaled_psnr_rejects_bad_std(std: tuple[float, ...]) -> None:
    with pytest.raises(MetricInputError, match="std"):
        psnr_std_scaled(_images(), _images(seed=1), std)


def test_ssim_is_one_for_identical_images_and_falls_with_noise() -> None:
    ref = _images(2, 3, 24)
    assert ssim(ref, ref).tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    values = [ssim(_noisy(ref, sigma), ref).mean().item() for sigma in (0.02, 0.1, 0.3)]
    assert 1 > values[0] > values[1] > values[2]


def test_ssim_equals_scikit_image_with_the_reference_settings() -> None:
    ref = _images(2, 3, 20, seed=3)
    x = _noisy(ref, 0.15)
    expected = [
        structural_similarity(a.double().numpy(), b.double().numpy(), gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=1.0, channel_axis=0)
        for a, b in zip(x, ref, strict=True)
    ]
    assert ssim(x, ref).tolist() == pytest.approx(expected, abs=1e-12)
    gray = ssim(x[:, :1], ref[:, :1]).tolist()  # one channel goes through channel_axis=0 too
    assert gray == pytest.approx([structural_similarity(
        a[0].double().numpy(), b[0].double().numpy(), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0) for a, b in zip(x, ref, strict=True)], abs=1e-12)


def test_ssim_refuses_images_smaller_than_its_window_unless_asked() -> None:
    digits = _images(2, 1, 8)
    with pytest.raises(MetricInputError, match=r"at least 11×11.*got 8×8.*win_size"):
        ssim(digits, digits)
    assert ssim(digits, digits, win_size=7).tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(MetricInputError, match="odd"):
        ssim(digits, digits, win_size=4)


@pytest.mark.parametrize(("x", "ref", "match"), [
    (torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 9), "differ in shape"),
    (torch.rand(3, 8, 8), torch.rand(3, 8, 8), r"\(k, C, H, W\)"),
    (torch.rand(2, 3, 8, 8) * 255, torch.rand(2, 3, 8, 8), r"\[0, 1\]"),
    (torch.rand(2, 3, 8, 8) - 0.5, torch.rand(2, 3, 8, 8), r"\[0, 1\]"),
    (torch.full((1, 1, 8, 8), float("nan")), torch.rand(1, 1, 8, 8), "NaN"),
    (torch.ones(2, 3, 8, 8, dtype=torch.uint8), torch.ones(2, 3, 8, 8, dtype=torch.uint8), "floating"),
    (torch.rand(0, 3, 8, 8), torch.rand(0, 3, 8, 8), "empty"),
    (np.zeros((1, 1, 8, 8)), torch.rand(1, 1, 8, 8), "torch.Tensor"),
])
def test_image_metrics_reject_misuse_clearly(x: torch.Tensor, ref: torch.Tensor, match: str) -> None:
    with pytest.raises(MetricInputError, match=match) as info:
        mse(x, ref)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def test_match_by_mse_recovers_a_shuffled_permutation() -> None:
    ref = _images(6, 3, 8, seed=4)
    shuffle = torch.tensor([3, 0, 5, 1, 4, 2])
    x = _noisy(ref[shuffle], 0.05)  # x[j] is a noisy copy of ref[shuffle[j]]
    perm = match_by_mse(x, ref)
    assert perm.dtype == torch.int64
    assert torch.equal(shuffle[perm], torch.arange(6))  # x[perm[i]] matches ref[i]
    assert torch.equal(match_by_mse(ref, ref), torch.arange(6))
    rows = torch.randn(4, 5, generator=torch.Generator().manual_seed(5))  # tabular rows work too
    assert torch.equal(match_by_mse(rows[torch.tensor([2, 3, 1, 0])], rows), torch.tensor([3, 2, 0, 1]))
    with pytest.raises(MetricInputError, match="same shape"):
        match_by_mse(ref[:5], ref)


def test_image_metrics_reports_every_metric_per_sample() -> None:
    ref = _images(2, 3, 16)
    x = _noisy(ref, 0.1)
    records = image_metrics(x, ref, std=CIFAR10_STD)
    assert [set(r) for r in records] == [{"mse", "psnr", "ssim", "lpips", "psnr_std_scaled"}] * 2
    assert [r["psnr"] for r in records] == pytest.approx(psnr(x, ref).tolist())
    assert [r["ssim"] for r in records] == pytest.approx(ssim(x, ref).tolist())
    assert all(r["lpips"] is None for r in records)  # unavailable, never 0
    assert all(isinstance(r["mse"], float) for r in records)
    assert "psnr_std_scaled" not in image_metrics(x, ref)[0]
    tiny = image_metrics(_images(1, 1, 8), _images(1, 1, 8, seed=1))[0]
    assert tiny["ssim"] is None and tiny["lpips"] is None and tiny["mse"] > 0


def test_feature_errors_on_a_hand_example() -> None:
    true = [{"age": 40, "income": 1000.0, "sex": "f"}, {"age": 20, "income": 0.0, "sex": "m"}]
    pred = [{"age": 44, "income": 1500.0, "sex": "f"}, {"age": 18, "income": 10.0, "sex": "f"}]
    out = feature_errors(pred, true, numeric=["age", "income"], categorical=["sex"])
    assert out["numeric_abs_error"] == {"age": 3.0, "income": 255.0}
    assert out["categorical_accuracy"] == {"sex": 0.5}
    assert out["mean_abs_error"] == 129.0
    assert out["mean_categorical_accuracy"] == 0.5
    # |44-40|/40, |18-20|/20, |1500-1000|/1000; income's true 0 has no relative error
    assert out["mean_relative_error"] == pytest.approx((0.1 + 0.1 + 0.5) / 3)
    assert out["relative_error_cells"] == 3 and out["n_rows"] == 2
    only_categorical = feature_errors(pred, true, numeric=[], categorical=["sex"])
    assert only_categorical["mean_abs_error"] is None and only_categorical["mean_relative_error"] is None


@pytest.mark.parametrize(("pred", "numeric", "categorical", "match"), [
    ([{"a": 1}], ["a"], [], "1 predicted rows but 2"),
    ([{"a": 1}, {"b": 2}], ["a"], [], "lacks features"),
    ([{"a": 1}, {"a": "x"}], ["a"], [], "not a number"),
    ([{"a": 1}, {"a": float("inf")}], ["a"], [], "not finite"),
    ([{"a": 1}, {"a": 2}], ["a"], ["a"], "both numeric and categorical"),
    ([{"a": 1}, {"a": 2}], [], [], "at least one"),
])
def test_feature_errors_rejects_misuse(pred: list[dict], numeric: list[str], categorical: list[str],
                                       match: str) -> None:
    with pytest.raises(MetricInputError, match=match):
        feature_errors(pred, [{"a": 1}, {"a": 2}], numeric, categorical)


def test_label_accuracy() -> None:
    assert label_accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    assert label_accuracy(torch.tensor([[1], [2]]), torch.tensor([1, 2])) == 1.0
    with pytest.raises(MetricInputError, match="3 predicted labels but 2"):
        label_accuracy([1, 2, 3], [1, 2])
    with pytest.raises(MetricInputError, match="zero"):
        label_accuracy([], [])
