"""`unlearnleak report RUN_DIR`: the files a user opens, the page's content, bad input, atomic publication."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from runs import make_cell, write_run
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def _report(*args: str):
    return runner.invoke(app, ["report", *args])


def test_report_writes_tables_figures_and_a_self_contained_page(k_sweep: Path) -> None:
    result = _report(str(k_sweep))
    assert result.exit_code == 0, result.output
    out = k_sweep / "report"
    assert "Headline" in result.stdout and "report written to" in result.stdout  # the rich console table
    for name in ("headline", "feature_recovery", "label_inference", "errors", "cells"):
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
        assert (out / "tables" / f"{name}.md").read_text().startswith("## ")
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["confidence_change_k_1.png", "confidence_change_k_3.png", "feature_recovery_vs_k.png",
                       "label_inference_vs_k.png", "reconstructions_cifar10_gradient_ascent.png"]
    assert all((out / "figures" / f).read_bytes()[:8] == PNG for f in figures)
    page = (out / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == len(figures) and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=\"(https?:|//)", page) and "<script" not in page.lower()  # nothing external
    assert "<link" not in page and "@import" not in page and "url(" not in page
    # the failed cell's message is shown, escaped
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; k=5 exceeds N" in page
    # provenance: config, command, versions, git revision, timing, data indices
    assert "sweep:\n  scenario.forget.k: [1, 3]" in page and "unlearnleak sweep toy.yaml" in page
    assert "abc123" in page and "2.13.0" in page and "2026-12-01T06:05:00Z" in page
    assert "forget.indices" in page and "cell seconds (sum)" in page
    assert "(n=9)" in page and "thumbnail_4x4 psnr" in page and "chance" in page


def test_defense_sweep_gets_the_trade_off_curve(defense_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "rep"
    result = _report(str(defense_sweep), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "figures" / "defense_tradeoff.png").read_bytes()[:8] == PNG
    assert (out / "figures" / "feature_recovery_vs_sigma.png").is_file()
    assert not (defense_sweep / "report").exists()


def test_parameter_values_are_drawn_literally(tmp_path: Path) -> None:
    """A string parameter with `$` or `_` (not TeX) and `<b>` (not HTML) is shown as written."""
    run = tmp_path / "run"
    rows = [make_cell(run, f"m{i}s0", {"scenario.unlearning.method": name, "seed": 0})
            for i, name in enumerate(("cost $5^$ <b>x</b>", "a_b"))]
    result = _report(str(write_run(run, rows)))
    assert result.exit_code == 0, result.output
    page = (run / "report" / "index.html").read_text()
    assert "cost $5^$ &lt;b&gt;x&lt;/b&gt;" in page and "cost $5^$ <b>" not in page


def test_a_run_of_only_errors_still_reports_them(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [make_cell(tmp_path / "run", "e1", {"seed": 0}, status="error",
                                                 error="CUDA not available: use --device cpu")])
    result = _report(str(run))
    assert result.exit_code == 0, result.output
    page = (run / "report" / "index.html").read_text()
    assert "Failed cells (1)" in page and "CUDA not available: use --device cpu" in page
    assert "0 of 1 cells finished" in page


def _corrupt_line(run: Path) -> None:
    lines = (run / "results.jsonl").read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")


def _not_an_object(run: Path) -> None:
    with (run / "results.jsonl").open("a") as handle:
        handle.write("[1, 2]\n")


def _bad_status(run: Path) -> None:
    with (run / "results.jsonl").open("a") as handle:
        handle.write(json.dumps({"cell": "x1", "status": "running"}) + "\n")


@pytest.mark.parametrize(("damage", "needles"), [
    (lambda run: (run / "cells" / "c3s1" / "truth.safetensors").unlink(), ["c3s1", "truth.safetensors", "missing"]),
    (lambda run: (run / "cells" / "c1s0" / "confidence_change.png").write_bytes(b"nope"), ["is not a PNG"]),
    (lambda run: (run / "cells" / "c1s2" / "reconstruction.safetensors").write_bytes(b"\x00" * 20),
     ["reconstruction.safetensors", "not a readable safetensors"]),
    (_corrupt_line, ["results.jsonl line 2 is not valid JSON", "re-run `unlearnleak sweep`"]),
    (_not_an_object, ["line 8 is a JSON list, not an object"]),
    (_bad_status, ["\"status\" 'running'"]),
    (lambda run: (run / "results.jsonl").unlink(), ["results.jsonl is missing", "not a run folder"]),
    (lambda run: (run / "run.json").write_text("{"), ["run.json is not valid JSON"]),
    (lambda run: shutil.rmtree(run), ["is not a folder"]),
])
def test_bad_input_is_one_line_and_writes_nothing(k_sweep: Path, damage, needles: list[str]) -> None:
    damage(k_sweep)
    one_error(_report(str(k_sweep)), *needles)
    assert not (k_sweep / "report").exists()
    assert not list(k_sweep.parent.glob("**/*.partial"))


def test_artifact_paths_cannot_leave_the_cell_folder(k_sweep: Path) -> None:
    rows = [json.loads(line) for line in (k_sweep / "results.jsonl").read_text().splitlines()]
    rows[0]["feature_recovery"]["artifacts"]["truth"] = "../../run.json"
    (k_sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    one_error(_report(str(k_sweep)), "leaves the cell folder")


def test_existing_report_is_kept_unless_overwrite(k_sweep: Path) -> None:
    assert _report(str(k_sweep)).exit_code == 0
    index = k_sweep / "report" / "index.html"
    index.write_text("mine")
    one_error(_report(str(k_sweep)), "already holds results", "--overwrite")
    assert index.read_text() == "mine"
    assert _report(str(k_sweep), "--overwrite").exit_code == 0
    assert index.read_text().startswith("<!DOCTYPE html>")


def test_a_failure_while_writing_leaves_nothing_half_written(k_sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unlearnleak.report.build as build

    real = build.write_text_atomic
    calls = []

    def failing(path: Path, text: str) -> Path:
        calls.append(path)
        if len(calls) == 4:
            raise OSError(28, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(build, "write_text_atomic", failing)
    one_error(_report(str(k_sweep)), "No space left on device")
    assert len(calls) == 4 and not (k_sweep / "report").exists()
    assert [p.name for p in k_sweep.iterdir() if p.name.startswith(".")] == []


def test_pool_reports_over_a_swept_key_like_over_seeds(k_sweep: Path) -> None:
    """--pool scenario.forget.k: the k = 1 and k = 3 cells form one group (label accuracy over all of them)."""
    result = _report(str(k_sweep), "--pool", "scenario.forget.k")
    assert result.exit_code == 0, result.output
    with open(k_sweep / "report" / "tables" / "label_inference.csv", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    assert len(lines) == 2  # header + one pooled group (was one per k)
    assert "(n=6)" in (k_sweep / "report" / "tables" / "label_inference.md").read_text()
    one_error(_report(str(k_sweep), "--pool", "scenario.n_train", "--overwrite"),
              "--pool scenario.n_train", "scenario.forget.k")


def test_report_says_each_groups_result_in_words_including_below_a_baseline(k_sweep: Path) -> None:
    import csv

    from unlearnleak.report.tables import sample_values
    from unlearnleak.verdicts import image_verdict

    result = _report(str(k_sweep))
    assert result.exit_code == 0, result.output
    out = k_sweep / "report"
    with (out / "tables" / "verdicts.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    rows = [json.loads(line) for line in (k_sweep / "results.jsonl").read_text().splitlines()]
    page = (out / "index.html").read_text()
    assert 'id="verdicts"' in page and page.index('id="verdicts"') < page.index('id="headline"')
    for line in lines:  # one per k: the shared rule applied to the group's mean PSNR and baselines
        k = int(line["scenario.forget.k"])
        group = [r for r in rows if r.get("status") == "ok" and r["params"]["scenario.forget.k"] == k]
        fr = [r for r in group if r.get("feature_recovery")]
        psnrs = [v for v in sample_values(fr, "psnr") if v is not None]
        base = {name: {m: _mean([r["feature_recovery"]["baselines"][name][m] for r in fr]) for m in ("psnr", "ssim")}
                for name in ("dataset_mean_colour", "own_mean_colour", "thumbnail_4x4")}
        ssim = _mean([v for v in sample_values(fr, "ssim") if v is not None])
        verdict = image_verdict(sum(psnrs) / len(psnrs), base, ssim=ssim)  # no LPIPS in these rows
        assert verdict is not None and line["feature_recovery"].startswith(verdict.sentence.split(" vs ")[0])
        assert ("below" in line["feature_recovery"]) == bool(verdict.below)
        assert line["label_inference"].startswith(("label leaked", "no label leak shown"))
        assert html_escape(line["feature_recovery"]) in page


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
