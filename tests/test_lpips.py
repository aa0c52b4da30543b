"""LPIPS v0.1 AlexNet: parity with the reference lpips code, invariants, weight checks, and the converter."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from unlearnleak.errors import CheckpointError, DownloadError
from unlearnleak.metrics import LPIPS, MetricInputError, download_lpips_weights, image_metrics, load_lpips
from unlearnleak.metrics import lpips as lpips_module

WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / lpips_module.LPIPS_FILENAME

# Per-sample LPIPS(alex, v0.1) of torchmetrics' LPIPS doctest inputs (torch.manual_seed(123);
# img = torch.rand(10, 3, 100, 100) * 2 - 1, twice). NOT a published number: no value for the AlexNet
# variant on reproducible inputs was found (torchmetrics' doctests use vgg/squeeze, the lpips README's
# example images are not available). These were computed with the reference code itself, lpips 0.1.4
# (lpips.LPIPS(net='alex'), its own alex.pth heads), whose torchvision AlexNet was given the conv
# weights of ../shared/weights; our values matched it to the last bit. See docs/metrics.md.
REFERENCE_LPIPS = [0.12224240601062775, 0.13723613321781158, 0.1404835730791092, 0.15878981351852417,
                   0.15933078527450562, 0.14351801574230194, 0.1320303976535797, 0.1606375277042389,
                   0.14818565547466278, 0.1831645518541336]


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    if not WEIGHTS.is_file():
        pytest.skip(f"LPIPS weights not found at {WEIGHTS} (CI has them in ../shared/weights)")
    return LPIPS.from_file(WEIGHTS)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_matches_the_reference_lpips_code_on_torchmetrics_doctest_inputs(lpips: LPIPS) -> None:
    torch.manual_seed(123)  # the doctest's global seed; torch's CPU generator is stable across versions
    img1 = (torch.rand(10, 3, 100, 100) * 2) - 1
    img2 = (torch.rand(10, 3, 100, 100) * 2) - 1
    values = lpips((img1 + 1) / 2, (img2 + 1) / 2)  # our inputs are in [0, 1]
    assert values.shape == (10,) and values.dtype == torch.float64
    assert values.tolist() == pytest.approx(REFERENCE_LPIPS, abs=1e-6)
    assert values.mean().item() == pytest.approx(0.14856, abs=5e-6)


def test_zero_for_identical_images_symmetric_and_growing_with_noise(lpips: LPIPS) -> None:
    ref = _rand(2, 3, 32, 32)
    assert lpips(ref, ref).tolist() == [0.0, 0.0]
    noisy = [(ref + s * torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
             for s in (0.02, 0.1, 0.3)]
    values = [lpips(x, ref) for x in noisy]
    assert bool((values[0] > 0).all() and (values[0] < values[1]).all() and (values[1] < values[2]).all())
    assert lpips(ref, noisy[1]).tolist() == pytest.approx(values[1].tolist(), abs=1e-6)


def test_grayscale_is_scored_as_repeated_rgb_and_small_inputs_are_refused(lpips: LPIPS) -> None:
    gray, other = _rand(2, 1, 40, 40), _rand(2, 1, 40, 40, seed=1)
    assert lpips(gray, other).tolist() == pytest.approx(
        lpips(gray.repeat(1, 3, 1, 1), other.repeat(1, 3, 1, 1)).tolist(), abs=1e-7)
    with pytest.raises(MetricInputError, match=r"at least 31×31, got 28×28"):
        lpips(_rand(1, 3, 28, 28), _rand(1, 3, 28, 28))
    with pytest.raises(MetricInputError, match="4 channels"):
        lpips(_rand(1, 4, 32, 32), _rand(1, 4, 32, 32))
    assert not any(p.requires_grad for p in lpips.parameters()) and not lpips.training


def test_image_metrics_includes_lpips_when_given(lpips: LPIPS) -> None:
    ref = _rand(2, 3, 32, 32)
    x = (ref + 0.05).clamp(0, 1)
    records = image_metrics(x, ref, lpips=lpips)
    assert [r["lpips"] for r in records] == pytest.approx(lpips(x, ref).tolist())


def test_weights_other_than_the_published_ones_are_refused(tmp_path: Path) -> None:
    if not WEIGHTS.is_file():
        pytest.skip(f"LPIPS weights not found at {WEIGHTS}")
    tensors = load_file(str(WEIGHTS))
    resaved = tmp_path / "resaved.safetensors"  # same tensors, other file bytes: accepted by content
    save_file(tensors, str(resaved))
    assert hashlib.sha256(resaved.read_bytes()).hexdigest() != lpips_module.LPIPS_SHA256
    assert isinstance(LPIPS.from_file(resaved), LPIPS)
    tensors["lin0.model.1.weight"] = tensors["lin0.model.1.weight"] * 1.01
    tampered = tmp_path / "tampered.safetensors"
    save_file(tensors, str(tampered))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        LPIPS.from_file(tampered)
    assert isinstance(LPIPS.from_file(tampered, verify=False), LPIPS)
    del tensors["lin4.model.1.weight"]
    save_file(tensors, str(tampered))
    with pytest.raises(CheckpointError, match="missing"):
        LPIPS.from_file(tampered, verify=False)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        LPIPS.from_file(tmp_path / "junk.safetensors")


def test_load_lpips_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lpips_module.LPIPS_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(lpips_module, "_shared_lpips_path", lambda: tmp_path / "absent.safetensors")
    assert load_lpips() is None  # nothing anywhere: unavailable, not an error
    monkeypatch.setenv(lpips_module.LPIPS_WEIGHTS_ENV, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match="not found"):
        load_lpips()
    if WEIGHTS.is_file():
        monkeypatch.delenv(lpips_module.LPIPS_WEIGHTS_ENV)
        cached = lpips_module.default_lpips_path()
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(WEIGHTS, cached)
        assert isinstance(load_lpips(), LPIPS)
        assert isinstance(load_lpips(WEIGHTS), LPIPS)


def _published_pth_files(tmp_path: Path) -> tuple[Path, Path]:
    """Stand-ins for lpips' alex.pth and torchvision's alexnet .pth, rebuilt from the shared weights."""
    tensors = load_file(str(WEIGHTS))
    heads = tmp_path / "alex.pth"
    torch.save({k: v for k, v in tensors.items() if k.startswith("lin")}, heads)
    backbone = tmp_path / "alexnet-owt.pth"
    state = {k: v for k, v in tensors.items() if k.startswith("features")}
    state["classifier.6.bias"] = torch.zeros(1000)  # torchvision's file also holds the classifier
    torch.save(state, backbone)
    return heads, backbone


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_converts_published_pth_files_to_the_checked_safetensors(tmp_path: Path) -> None:
    if not WEIGHTS.is_file():
        pytest.skip(f"LPIPS weights not found at {WEIGHTS}")
    heads, backbone = _published_pth_files(tmp_path)
    dest = download_lpips_weights(tmp_path / "out" / "w.safetensors", heads_url=heads.as_uri(),
                                  backbone_url=backbone.as_uri(), heads_sha256=_sha(heads),
                                  backbone_sha256_prefix=_sha(backbone)[:8])
    assert isinstance(LPIPS.from_file(dest), LPIPS)  # passes the published-weights check
    with pytest.raises(DownloadError, match="does not match the published"):
        download_lpips_weights(tmp_path / "x.safetensors", heads_url=heads.as_uri(),
                               backbone_url=backbone.as_uri(), backbone_sha256_prefix=_sha(backbone)[:8])


def test_download_never_unpickles_arbitrary_objects(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"lin0.model.1.weight": Path("/")}, evil)  # a pickle that needs a non-tensor global
    with pytest.raises(DownloadError, match="weights-only"):
        download_lpips_weights(tmp_path / "x.safetensors", heads_url=evil.as_uri(), heads_sha256=_sha(evil))


def test_download_offline_names_the_file_to_place(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"lpips_alex_v0\.1\.safetensors.*x\.safetensors"):
        download_lpips_weights(tmp_path / "x.safetensors", heads_url=(tmp_path / "nowhere.pth").as_uri())
