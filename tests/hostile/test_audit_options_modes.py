"""Every `audit` option applies in the mode given or is refused, and every value is range-checked before anything
runs: one `error:` line naming the option, exit 2, no results folder, the model file never imported (its marker
file never appears) and no endpoint contacted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hostile_http import Server, serve, v2
from hostile_pairs import MODEL, TinyPair, write_pair
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app

runner = CliRunner()


@pytest.fixture
def marked(tmp_path: Path) -> tuple[TinyPair, Path]:
    """A tabular pair (D = 4, K = 3) whose model file leaves a marker when it is imported."""
    marker = tmp_path / "imported"
    code = f"open({str(marker)!r}, 'w').close()\n" + MODEL
    return write_pair(tmp_path / "user", model_code=code), marker


@pytest.fixture
def image_pair(tmp_path: Path) -> tuple[TinyPair, Path]:
    """An image pair (1×4×4, K = 3) whose model file leaves a marker, and a valid ground-truth file."""
    marker = tmp_path / "imported"
    pair = write_pair(tmp_path / "user", (1, 4, 4), model_code=f"open({str(marker)!r}, 'w').close()\n" + MODEL)
    return pair, marker


@pytest.fixture
def endpoint() -> Iterator[Server]:
    """A correct V2 server that records every request (none may arrive)."""
    with serve(v2()) as server:
        yield server


def refused(args: list[str], out: Path, *needles: str) -> str:
    line = one_error(runner.invoke(app, args), *needles)
    assert not out.exists()
    return line


def black(server: Server, out: Path, *extra: str, shape: tuple[str, ...] = ("--input-shape", "1,2,2")) -> list[str]:
    url = f"{server.url}/v2/models/m"
    return ["audit", "--original-endpoint", url, "--unlearned-endpoint", url, *shape, "--num-classes", "3",
            "--out", str(out), *extra]


BLACK_ONLY = [("--budget", "0"), ("--budget", "-5"), ("--budget", "100"), ("--rate-limit", "3"),
              ("--rate-limit", "-3"), ("--rate-limit", "1e-9"), ("--endpoint-outputs", "softmaxes"),
              ("--endpoint-outputs", "logits"), ("--endpoint-timeout", "5"), ("--endpoint-deadline", "5"),
              ("--redirects", "same-origin")]


@pytest.mark.parametrize(("flag", "value"), BLACK_ONLY, ids=[f"{f}={v}" for f, v in BLACK_ONLY])
def test_black_box_options_are_refused_in_a_white_box_audit(flag: str, value: str, tmp_path: Path,
                                                            marked: tuple[TinyPair, Path]) -> None:
    pair, marker = marked
    out = tmp_path / "o"
    refused(pair.args(out, flag, value), out, flag, "applies only to a black-box audit")
    assert not marker.exists()


def test_several_stray_options_are_named_together(tmp_path: Path, marked: tuple[TinyPair, Path]) -> None:
    pair, marker = marked
    out = tmp_path / "o"
    refused(pair.args(out, "--budget", "0", "--rate-limit", "2"), out, "--budget, --rate-limit apply only to a "
            "black-box audit")
    assert not marker.exists()


WHITE_ONLY = [("--preset", "nope"), ("--preset", "best"), ("--iterations", "5"), ("--restarts", "2"),
              ("--time-budget", "5"), ("--labels", "1"), ("--mean", "0.5"), ("--std", "0.5"),
              ("--model-kwargs", "{}"), ("--train-size", "10"), ("--forget-size", "1"), ("--unlearning", "exact"),
              ("--device", "cpu"), ("--ground-truth", "GT"), ("--base", "BASE")]


@pytest.mark.parametrize(("flag", "value"), WHITE_ONLY, ids=[f"{f}={v}" for f, v in WHITE_ONLY])
def test_white_box_options_are_refused_in_a_black_box_audit(flag: str, value: str, tmp_path: Path,
                                                            endpoint: Server,
                                                            marked: tuple[TinyPair, Path]) -> None:
    pair, _ = marked
    value = {"GT": str(pair.original), "BASE": str(pair.original)}.get(value, value)
    out = tmp_path / "o"
    refused(black(endpoint, out, flag, value), out, flag, "applies only to a white-box audit")
    assert endpoint.requests == []


LABEL_ONLY = [("--generator", "zoo"), ("--set", "max_iter=2"), ("--max-seconds", "5")]


@pytest.mark.parametrize(("flag", "value"), LABEL_ONLY, ids=[f"{f}={v}" for f, v in LABEL_ONLY])
def test_label_inference_options_are_refused_when_it_is_skipped(flag: str, value: str, tmp_path: Path,
                                                                marked: tuple[TinyPair, Path]) -> None:
    pair, marker = marked
    out = tmp_path / "o"
    refused(pair.args(out, "--per-class", "0", flag, value), out, flag, "--per-class 0 skips")
    assert not marker.exists()


WHITE_RANGES = {
    "preset-unknown": (("--preset", "nope"), ("nope",)),
    "iterations-0": (("--iterations", "0"), ("iterations",)),
    "restarts-0": (("--restarts", "0"), ("restarts",)),
    "time-budget-inf": (("--time-budget", "inf"), ("time_budget",)),
    "time-budget-negative": (("--time-budget", "-1"), ("time_budget",)),
    "train-size-0": (("--train-size", "0"), ("--train-size",)),
    "forget-size-0": (("--forget-size", "0"), ("--forget-size",)),
    "forget-size-over-train-size": (("--forget-size", "5", "--train-size", "3"), ("--forget-size",)),
    "labels-55-of-3-classes": (("--labels", "55"), ("--labels must lie in [0, 3)",)),
    "labels-negative": (("--labels", "-1"), ("--labels",)),
    "seed-negative": (("--seed", "-1"), ("--seed",)),
    "seed-2**64": (("--seed", str(2 ** 64)), ("--seed",)),
    "per-class-negative": (("--per-class", "-1"), ("--per-class",)),
    "max-seconds-0": (("--max-seconds", "0"), ("max_seconds",)),
    "max-seconds-nan": (("--max-seconds", "nan"), ("max_seconds",)),
    "generator-gradient": (("--generator", "gradient"), ("--generator gradient needs the weights",)),
    "generator-public": (("--generator", "public"), ("--generator public needs public data",)),
    "generator-unknown": (("--generator", "nope"), ("nope",)),
    "unlearning-unknown": (("--unlearning", "sometimes"), ("--unlearning",)),
    "device-unknown": (("--device", "tpu"), ("tpu",)),
    "std-zero": (("--std", "0"), ("--std",)),
    "mean-nan": (("--mean", "nan"), ("--mean",)),
}


@pytest.mark.parametrize("case", sorted(WHITE_RANGES))
def test_white_box_values_are_range_checked_before_the_model_is_imported(case: str, tmp_path: Path,
                                                                         image_pair: tuple[TinyPair, Path]) -> None:
    extra, needles = WHITE_RANGES[case]
    pair, marker = image_pair
    out = tmp_path / "o"
    refused(pair.args(out, *extra), out, *needles)
    assert not marker.exists()


SHAPE_RANGES = {
    "num-classes-1": (("--num-classes", "1"), "--num-classes"),
    "num-classes-10**7": (("--num-classes", str(10 ** 7)), "--num-classes"),
    "input-shape-huge": (("--input-shape", "3,100000,100000"), "holds 30,000,000,000 values"),
    "input-shape-zero": (("--input-shape", "3,0,4"), "--input-shape"),
    "features-0": (("--features", "0"), "--features"),
}


@pytest.mark.parametrize("case", sorted(SHAPE_RANGES))
def test_shapes_and_classes_are_range_checked(case: str, tmp_path: Path, marked: tuple[TinyPair, Path]) -> None:
    (flag, value), needle = SHAPE_RANGES[case]
    pair, marker = marked
    out = tmp_path / "o"
    args = pair.args(out)
    i = args.index("--features")
    args = [*args[:i], *args[i + 2:]] if flag in ("--input-shape", "--features") else args
    if flag == "--num-classes":
        args[args.index("--num-classes") + 1] = value
    else:
        args += [flag, value]
    refused(args, out, needle)
    assert not marker.exists()


def _truth(folder: Path, images: torch.Tensor, labels: torch.Tensor | None) -> Path:
    tensors = {"images": images.contiguous()}
    if labels is not None:
        tensors["labels"] = labels.contiguous()
    path = folder / "truth.safetensors"
    save_file(tensors, str(path))
    return path


TRUTHS = {
    "label-55-for-3-classes": (torch.rand(1, 1, 4, 4), torch.tensor([55]), (), "labels must lie in [0, 3)"),
    "label-negative": (torch.rand(1, 1, 4, 4), torch.tensor([-1]), (), "labels must lie in [0, 3)"),
    "wrong-image-shape": (torch.rand(1, 1, 8, 8), torch.tensor([0]), (), "expected (k, 1, 4, 4)"),
    "pixels-0-255": (torch.rand(1, 1, 4, 4) * 255, torch.tensor([0]), (), "must be in [0, 1]"),
    "nan-pixels": (torch.full((1, 1, 4, 4), float("nan")), torch.tensor([0]), (), "non-finite"),
    "k-differs-from-forget-size": (torch.rand(1, 1, 4, 4), torch.tensor([0]), ("--forget-size", "2"),
                                   "--forget-size says k = 2"),
    "more-labels-than-samples": (torch.rand(1, 1, 4, 4), torch.tensor([0, 1]), (), "2 labels for 1 samples"),
}


@pytest.mark.parametrize("case", sorted(TRUTHS))
def test_ground_truth_is_checked_against_the_model_before_compute(case: str, tmp_path: Path,
                                                                  image_pair: tuple[TinyPair, Path]) -> None:
    images, labels, extra, needle = TRUTHS[case]
    pair, marker = image_pair
    truth = _truth(tmp_path, images, labels)
    out = tmp_path / "o"
    refused(pair.args(out, "--ground-truth", str(truth), *extra), out, "--ground-truth", needle)
    assert not marker.exists()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.complex64, torch.bool])
def test_weights_that_are_not_real_valued_are_refused(dtype: torch.dtype, tmp_path: Path,
                                                      marked: tuple[TinyPair, Path]) -> None:
    pair, _ = marked
    state = load_file(str(pair.unlearned))
    bad = {k: (v * 10).to(dtype) if dtype != torch.bool else v > 0 for k, v in state.items()}
    save_file(bad, str(pair.unlearned))
    out = tmp_path / "o"
    refused(pair.args(out, "--per-class", "0"), out, "--unlearned", "holds",
            f"{str(dtype).removeprefix('torch.')} values but the model's net.fc.")


def test_float64_weights_are_accepted(tmp_path: Path, marked: tuple[TinyPair, Path]) -> None:
    pair, _ = marked
    save_file({k: v.double() for k, v in load_file(str(pair.unlearned)).items()}, str(pair.unlearned))
    result = runner.invoke(app, pair.args(tmp_path / "o", "--per-class", "0", "--iterations", "2"))
    assert result.exit_code == 0, result.output


BLACK_RANGES = {
    "budget-0": (("--budget", "0"), "--budget must be >= 1"),
    "budget-negative": (("--budget", "-5"), "--budget must be >= 1"),
    "endpoint-timeout-0": (("--endpoint-timeout", "0"), "--endpoint-timeout"),
    "endpoint-timeout-inf": (("--endpoint-timeout", "inf"), "--endpoint-timeout"),
    "endpoint-timeout-a-year": (("--endpoint-timeout", "31536000"), "at most 3600"),
    "endpoint-deadline-negative": (("--endpoint-deadline", "-1"), "--endpoint-deadline"),
    "endpoint-deadline-nan": (("--endpoint-deadline", "nan"), "--endpoint-deadline"),
    "endpoint-outputs-unknown": (("--endpoint-outputs", "softmaxes"), "--endpoint-outputs"),
    "redirects-always": (("--redirects", "always"), "--redirects must be one of none, same-origin"),
    "per-class-0": (("--per-class", "0"), "--per-class must be >= 1"),
    "generator-gradient": (("--generator", "gradient"), "needs the weights"),
    "seed-negative": (("--seed", "-3"), "--seed"),
}


@pytest.mark.parametrize("case", sorted(BLACK_RANGES))
def test_black_box_values_are_range_checked_before_any_request(case: str, tmp_path: Path,
                                                               endpoint: Server) -> None:
    extra, needle = BLACK_RANGES[case]
    out = tmp_path / "o"
    refused(black(endpoint, out, *extra), out, needle)
    assert endpoint.requests == []


def test_nes_on_tabular_inputs_is_refused_before_the_model_is_imported(tmp_path: Path,
                                                                       marked: tuple[TinyPair, Path]) -> None:
    pair, marker = marked
    out = tmp_path / "o"
    refused(pair.args(out, "--generator", "nes"), out, "needs image inputs")
    assert not marker.exists()


def test_nes_on_tabular_endpoints_is_refused_before_any_request(tmp_path: Path, endpoint: Server) -> None:
    out = tmp_path / "o"
    refused(black(endpoint, out, shape=("--features", "4")), out, "needs image inputs", "--generator zoo")
    assert endpoint.requests == []
