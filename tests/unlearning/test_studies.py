"""Both studies end to end on the real CIFAR-10 subset at a tiny size, through `unlearnleak study`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unlearnleak.cli import app

TINY = ["setting.pretrain.epochs=0", "setting.holdout=200", "setting.n_recovery=8", "setting.recovery_positions=[1]",
        "setting.n_label=40", "setting.label_classes=[3]", "attack.iterations=3", "attack.per_class=2",
        "attack.generator=gradient"]  # θ0 is untrained here: too few correct public samples for `public`


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--threads", "1", *args])
    return result.exit_code, result.output


@pytest.mark.shared_data
def test_methods_study_writes_results_table_and_figure(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "methods"
    sets = [f"--set={s}" for s in [*TINY, "methods={gradient_ascent: {}, sisa: {shards: 2, slices: 2}}"]]
    code, output = _invoke(["study", "methods", "--out", str(out), "--data-dir", str(shared_data), *sets])
    assert code == 0, output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rows[0]["kind"] == "baselines" and rows[0]["label_chance"] == 0.1
    assert {"dataset_mean_colour", "own_mean_colour", "thumbnail_4x4"} <= set(rows[0]["image"])
    kinds = {(r["method"], r["kind"]) for r in rows[1:]}
    assert kinds == {("gradient_ascent", "recovery"), ("gradient_ascent", "label"), ("sisa", "recovery"),
                     ("sisa", "label")}
    sisa_rec = next(r for r in rows if r.get("method") == "sisa" and r["kind"] == "recovery")
    assert sisa_rec["attacked"].startswith("shard ")
    for r in rows[1:]:
        assert r["sample_gradients"] > 0 and "unlearned_test" in r["accuracy"]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"gradient_ascent", "sisa"}
    assert summary["environment"]["versions"]
    assert (out / "methods.png").stat().st_size > 1000
    assert "| gradient_ascent |" in (out / "table.md").read_text()


@pytest.mark.shared_data
def test_defenses_study_sweeps_each_defense(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "defenses"
    sets = [f"--set={s}" for s in [*TINY, "sweeps={noise: [0, 0.5], prune: [0.9]}"]]
    code, output = _invoke(["study", "defenses", "--out", str(out), "--data-dir", str(shared_data), *sets])
    assert code == 0, output
    summary = json.loads((out / "summary.json").read_text())
    points = {(p["defense"], p["strength"]): p for p in summary["points"]}
    assert set(points) == {("noise", 0), ("noise", 0.5), ("prune", 0.9)}
    # σ = 0 releases θ_u unchanged, so its utility is θ_u's; heavy noise changes the released model
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()][1:]
    acc = {(r["defense"], r["strength"]): r["test_accuracy"] for r in rows if r["kind"] == "label"}
    assert acc[("noise", 0)] != acc[("noise", 0.5)]
    assert (out / "tradeoff.png").stat().st_size > 1000


def test_bad_study_options_fail_with_one_error_line(tmp_path: Path) -> None:
    code, output = _invoke(["study", "methods", "--out", str(tmp_path / "x"), "--set", "methods={forget_it: {}}"])
    assert code == 2 and "error:" in output and "forget_it" in output
    code, output = _invoke(["study", "defenses", "--out", str(tmp_path / "y"), "--set", "sweeps={noise: [-1]}"])
    assert code == 2 and "sigma" in output
    code, output = _invoke(["study", "defenses", "--out", str(tmp_path / "z"), "--set", "attack.iterationz=3"])
    assert code == 2 and "iterationz" in output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    code, output = _invoke(["study", "methods", "--out", str(tmp_path / "full")])
    assert code == 2 and "--overwrite" in output
