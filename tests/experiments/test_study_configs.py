"""The studies are shipped experiment configs run by the runner and reported with their forget sets pooled;
`unlearnleak study` is a short alias that prints the `run` commands it runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from unlearnleak.cli import app
from unlearnleak.commands import study
from unlearnleak.experiments.schema import expand_cells, load_experiment, resolve_config_path

runner = CliRunner()

# Real (scikit-learn digits) data, sized for a test: the study configs' keys, smaller.
SMALL = ["scenario.dataset=digits", "scenario.model_kwargs={}", "scenario.holdout=300",
         "scenario.pretrain={epochs: 8, lr: 0.05, momentum: 0.9, batch_size: 64, augment: false}",
         "attacks.feature_recovery.iterations=2", "metrics=[psnr]"]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("kind", sorted(study.STUDIES))
def test_each_study_is_shipped_configs_whose_report_pools_a_swept_key(kind: str) -> None:
    for part in study.STUDIES[kind]:
        config = load_experiment(part.config)
        assert part.pool in config.sweep and len(config.sweep[part.pool]) >= 4
        assert len(expand_cells(config)) > len(config.sweep[part.pool])  # more than the forget sets: a comparison
    methods = load_experiment("studies/methods_recovery").sweep["scenario.unlearning.method"]
    assert "sisa" in methods and "exact" in methods  # SISA is a method like the others now


def test_the_alias_runs_the_configs_prints_them_and_pools_the_forget_sets(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`study methods` on a two-method, two-forget-set version of the shipped configs: what it prints is the
    `run` command it ran, and the pooled report has one row per method over both forget sets."""
    parts = []
    for part in study.STUDIES["methods"]:
        data = yaml.safe_load(resolve_config_path(part.config).read_text(encoding="utf-8"))
        swept = {"scenario.forget.positions": [[3], [7]], "scenario.forget.class_id": [3, 5]}[part.pool]
        data["sweep"] = {"scenario.unlearning.method": ["gradient_ascent", "sisa"], part.pool: swept}
        data["scenario"]["n_train"] = min(data["scenario"]["n_train"], 200)
        path = tmp_path / f"{part.folder}.yaml"
        path.write_text(json.dumps(data), encoding="utf-8")
        parts.append(study.StudyPart(part.folder, str(path), part.pool))
    monkeypatch.setitem(study.STUDIES, "methods", tuple(parts))
    out = tmp_path / "out"
    args = ["study", "methods", "--out", str(out), "--workers", "1"]
    for s in SMALL:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = [line for line in result.stdout.splitlines() if line.startswith("study methods (")]
    assert printed[0].startswith(f"study methods (recovery): unlearnleak run {parts[0].config} --out "
                                 f"{out / 'recovery'} --set ")
    assert f"unlearnleak report {out / 'labels'} --pool scenario.forget.class_id" in result.stdout
    for part in parts:
        rows = _rows(out / part.folder)
        assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
        assert (out / part.folder / "report" / "index.html").is_file()
    recovery = _rows(out / "recovery")
    assert {r["feature_recovery"].get("attacked", "").split(" ")[0] for r in recovery} == {"", "member"}
    # pooled: one row per method (was one per method and forget set), each over both forget sets
    table = _csv(out / "labels" / "report" / "tables" / "label_inference.csv")
    assert len(table) == 2, table
    again = runner.invoke(app, [*args])  # the same command resumes: every cell is done already
    assert again.exit_code == 0, again.output
    assert "4 of 4 cells ok" in again.stdout and len(_rows(out / "recovery")) == 4


def test_old_study_configs_and_conflicting_flags_are_one_line(tmp_path: Path) -> None:
    from cli_checks import one_error

    old = tmp_path / "study.yaml"
    old.write_text("setting: {dataset: digits}\n", encoding="utf-8")
    one_error(runner.invoke(app, ["study", "defenses", "--out", str(tmp_path / "o"), "--config", str(old)]),
              "studies/defenses_recovery.yaml and studies/defenses_labels.yaml", "unlearnleak run")
    one_error(runner.invoke(app, ["study", "methods", "--out", str(tmp_path / "o"), "--device", "cpu", "--set",
                                  "device=cpu"]), "--device and --set device=… both set device")
    assert not (tmp_path / "o").exists()


def test_a_repeated_forget_set_or_strength_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """A repeat would be counted twice once the forget sets are pooled (the studies refused repeats too)."""
    from cli_checks import one_error

    for config, sweep in (("studies/methods_labels", '{"scenario.forget.class_id": [3, 5, 3]}'),
                          ("studies/defenses_labels", '{"defense.name,defense.params": '
                                                      '[[noise, {sigma: 0.1}], [noise, {sigma: 0.1}]]}')):
        one_error(runner.invoke(app, ["run", config, "--out", str(tmp_path / "o"), "--set",
                                      f"sweep={sweep}"]), "are the same experiment", "remove the repeated value")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["methods", "defenses"])
def test_a_study_folder_of_the_earlier_format_fails_with_one_line_saying_what_to_do(tmp_path: Path,
                                                                                      kind: str) -> None:
    """The folders the earlier `study` wrote (benchmarks/results/studies/) cannot be converted: one line says so."""
    import shutil

    from cli_checks import one_error

    old = tmp_path / "old"
    shutil.copytree(Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "studies" / kind, old)
    one_error(runner.invoke(app, ["report", str(old)]), f"`study {kind}` folder of an earlier unlearnleak",
              "table.md", f"unlearnleak study {kind} --out NEW")
    assert not (old / "report").exists()
