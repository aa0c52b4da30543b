"""The one orchestration: scenario → defense → attacks → evaluation → artifacts, used by every entry point.

Stages, each taking the previous stage's value (DESIGN.md, "one direction"):

- :func:`prepare_cell`: build the scenario of an :class:`ExperimentConfig` (θ0 cached), apply its defense to
  θ_u (the *served* weights, which are what both attacks see) and measure utility.
- :func:`recover_and_evaluate`: the server's feature recovery on a pair (the facade ``FeatureRecovery``),
  then its evaluation against D_u with baselines → :class:`FeatureRecoveryEvaluation`.
- :func:`infer_and_evaluate`: the user's label inference (the facade ``LabelInference``): probes made against
  θ's oracle only, replayed to θ_u's oracle (which counts every query), the calibrated guess scored against the
  deleted classes → :class:`LabelInferenceEvaluation`.
- :func:`write_recovery` / :func:`write_inference`: the artifacts (tensors, grids, figures).

:func:`run_cell` runs one cell of an experiment and returns its results row; :func:`run_feature_recovery` and
:func:`run_label_inference` run one attack of a config. ``unlearnleak recover``, ``infer-label``, ``demo``,
``run``/``sweep`` and the studies all call these; none re-wires the stages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel
from torch import nn

from unlearnleak.attacks.feature_recovery import PRESETS, RECONSTRUCTION_FILE, evaluate_reconstruction
from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.attacks.feature_recovery.facade import FeatureRecovery
from unlearnleak.attacks.feature_recovery.learned_prior import LearnedPrior, learned_prior_for
from unlearnleak.attacks.label_inference import Calibration, ProbeSet
from unlearnleak.attacks.label_inference.config import LabelInferenceConfig
from unlearnleak.attacks.label_inference.facade import LabelInference
from unlearnleak.attacks.label_inference.own_nulls import calibrate_if_tested, own_null_calibrator
from unlearnleak.cache import cache_dir
from unlearnleak.data import Dataset
from unlearnleak.errors import ConfigError
from unlearnleak.experiments.console import headline_table, iteration_progress
from unlearnleak.experiments.evaluation import (
    IMAGE_METRICS,
    FeatureRecoveryEvaluation,
    LabelInferenceEvaluation,
    image_baselines,
    tabular_baselines,
    tabular_errors,
)
from unlearnleak.experiments.schema import ExperimentConfig
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.metrics import LPIPS
from unlearnleak.oracle import ModelOracle, Oracle
from unlearnleak.pair import ModelPair, StateDict
from unlearnleak.rows import CellResults, CellRow, FeatureRecoveryResult, LabelInferenceResult
from unlearnleak.run_folder import CELLS_DIR, write_one_cell
from unlearnleak.scenario import Scenario, build_scenario, server_view, unlearning_kind
from unlearnleak.storage import save_tensors_atomic

__all__ = [
    "CONFIDENCE_FILE", "GRID_FILE", "PROBES_DIR", "PROBE_GRID_FILE", "TRUTH_FILE", "CellResult",
    "FeatureRecoveryEvaluation", "LabelInferenceEvaluation", "PreparedCell", "execute_cell",
    "headline_table", "infer_and_evaluate", "prepare_cell", "recover_and_evaluate",
    "run_cell", "run_feature_recovery", "run_label_inference", "write_inference", "write_recovery",
]

GRID_FILE = "reconstruction.png"
TRUTH_FILE = "truth.safetensors"
CONFIDENCE_FILE = "confidence_change.png"
PROBE_GRID_FILE = "probes.png"
PROBES_DIR = "probes"
PAIR_DIR = "pair"

Progress = Callable[[str], None]  # told the name of each stage as it starts (e.g. to label a cell's bar)
Attack = Literal["feature_recovery", "label_inference"]


def _say(progress: Progress | None, stage: str) -> None:
    if progress is not None:
        progress(stage)


# ---- the stages ---------------------------------------------------------------------------------------------


def recover_and_evaluate(pair: ModelPair, knowledge: ServerKnowledge | None, spec: FeatureRecoveryConfig,
                         truth: tuple[torch.Tensor, torch.Tensor] | None, *, lpips: LPIPS | None = None,
                         metrics: Sequence[str] = IMAGE_METRICS, labels: Sequence[int] | None = None,
                         transform: Any = None, feature_mean: torch.Tensor | None = None,
                         learned_prior: LearnedPrior | None = None) -> FeatureRecoveryEvaluation:
    """The server attack (``FeatureRecovery(spec)``) on ``pair`` with the declared ``knowledge``, evaluated
    against ``truth`` = D_u.

    Args:
        spec: the attack's config, its run settings (seed, device, k) included.
        truth: (x, y) of D_u, seen only by the evaluation; None: the reconstruction is not scored.
        lpips: the LPIPS model (None: LPIPS reported as None); used only if ``"lpips"`` is in ``metrics``.
        labels: labels the server knows (declared as knowledge, so the result says they were used).
        transform, feature_mean: tabular rows: the dataset's transform (errors in original units) and the
            feature-mean row of data the attacker holds (the baseline).
        learned_prior: the server's public images for the learned prior (None: off); the decoded images
            alone are scored too (``FeatureRecoveryEvaluation.decoder_scores``).
    """
    pair, knowledge, attacked = server_view(pair, knowledge)  # a served ensemble (SISA): its moved member
    if labels is not None:
        base = knowledge or ServerKnowledge()
        knowledge = replace(base, labels=tuple(int(v) for v in labels), n_forget=spec.k or base.n_forget)
    total = None if spec.time_budget is not None else spec.iterations or PRESETS.get(spec.preset).iterations
    with iteration_progress("feature recovery: inversion steps", total):
        rec = FeatureRecovery(spec, learned_prior=learned_prior).attack(pair, knowledge)
    metrics = tuple(m for m in metrics if m in IMAGE_METRICS)
    if truth is None:
        return FeatureRecoveryEvaluation(spec, rec, None, None, metrics, attacked=attacked)
    gt_x, gt_y = truth[0].detach().cpu().float(), truth[1].detach().cpu().long()
    image = rec.kind == "image"
    scorer = lpips if image and "lpips" in metrics else None
    scores = evaluate_reconstruction(rec, gt_x, gt_y, scorer, std=pair.spec.std if image else None,
                                     transform=None if image else transform)
    if image:
        decoded = None if rec.decoded is None else evaluate_reconstruction(
            replace(rec, x=rec.decoded), gt_x, gt_y, scorer, std=pair.spec.std)
        return FeatureRecoveryEvaluation(spec, rec, scores, image_baselines(gt_x, pair.spec.mean, scorer), metrics,
                                         decoder_scores=decoded, attacked=attacked)
    matched = rec.x.detach().cpu()[torch.tensor(scores["assignment"], dtype=torch.long)]
    return FeatureRecoveryEvaluation(spec, rec, scores, tabular_baselines(gt_x, feature_mean, transform), metrics,
                                     tabular=tabular_errors(matched, gt_x, transform), attacked=attacked)


def infer_and_evaluate(original_oracle: Oracle, unlearned_oracle: Oracle, spec: LabelInferenceConfig,
                       deleted: Sequence[int] | None, *, public: Dataset | None = None,
                       probes: ProbeSet | None = None, white_box: nn.Module | None = None,
                       calibration: Calibration | None = None, own_nulls: tuple[nn.Module, Dataset] | None = None,
                       cache: Path | None = None) -> LabelInferenceEvaluation:
    """The user attack (``LabelInference(spec)``): probes against θ only (or ``probes`` made earlier; θ itself,
    ``white_box``, for gradient probes; ``public`` data for public ones), one query each to θ_u's oracle, the
    calibrated decision of ``spec`` (or ``calibration``), scored against ``deleted`` (None: not scored).

    ``own_nulls``: (θ, public rows) for ``spec.calibration == "own_nulls"``: the threshold then comes from
    null pairs of θ itself (``calibrate_on_own_model``), which only the holder of θ can make."""
    attack = LabelInference(spec)
    if probes is None:
        probes = attack.probe(original_oracle, public=public, white_box=white_box)
    info: dict[str, Any] = {}
    if calibration is None and spec.calibration == "own_nulls":
        if own_nulls is None:
            raise ConfigError("calibration 'own_nulls' needs θ's weights and public rows (the audit holds them); "
                              "a black-box user has neither: use calibration 'auto'")
        theta, rows = own_nulls
        calibration, info = calibrate_if_tested(probes, spec.min_per_class,
                                                own_null_calibrator(theta, rows.x, rows.y, spec, cache=cache),
                                                spec.top_k)
    elif calibration is not None:
        info = dict(calibration.cost)
    guess = attack.guess(original_oracle, unlearned_oracle, probes, calibration=calibration)
    known = None if deleted is None else tuple(sorted({int(c) for c in deleted}))
    return LabelInferenceEvaluation(spec, guess, probes, known or None, original_oracle.num_classes,
                                    calibration_info=info)


def write_recovery(ev: FeatureRecoveryEvaluation, folder: Path, *,
                   truth: tuple[torch.Tensor, torch.Tensor] | None = None, class_names: Sequence[str] | None = None,
                   grid: str = GRID_FILE, write_truth: bool = True) -> FeatureRecoveryEvaluation:
    """Write the reconstruction (safetensors), D_u (``truth.safetensors``) and, for images, the grid
    (ground truth above what was recovered, matched sample by sample); returns ``ev`` with its artifacts."""
    from unlearnleak.report import grids  # looked up at call time (tests replace the writer)

    folder.mkdir(parents=True, exist_ok=True)
    rec = ev.reconstruction
    artifacts = {"reconstruction": RECONSTRUCTION_FILE}
    rec.save(folder / RECONSTRUCTION_FILE)
    if truth is not None and write_truth:
        save_tensors_atomic(folder / TRUTH_FILE, {"x": truth[0].detach().cpu().contiguous(),
                                                  "y": truth[1].detach().cpu().contiguous()})
        artifacts["truth"] = TRUTH_FILE
    if ev.image:
        ground, shown, captions = None, rec.x, None
        if ev.scores is not None and truth is not None:
            ground = truth[0]
            shown = rec.x[torch.tensor(ev.scores["assignment"], dtype=torch.long)]
            captions = [_caption(s, class_names) for s in ev.scores["samples"]]
        grids.save_reconstruction_grid(folder / grid, ground, shown, captions=captions)
        artifacts["grid"] = grid
    return replace(ev, artifacts=artifacts)


def _caption(sample: dict[str, Any], names: Sequence[str] | None) -> str:
    if names is None:
        return f"{sample['psnr']:.1f}dB"
    return f"{names[sample['true_label']]} / {names[sample['label']]}, {sample['psnr']:.1f} dB"


def write_inference(ev: LabelInferenceEvaluation, folder: Path, *, class_names: Sequence[str] | None = None,
                    save_probes: bool = False) -> LabelInferenceEvaluation:
    """Write Fig. 4 (per-class confidence changes), the probe grid (image probes) and, if asked, the probes."""
    from unlearnleak.report.label_figures import plot_confidence_changes, plot_probe_grid

    folder.mkdir(parents=True, exist_ok=True)
    artifacts = {}
    if save_probes:
        ev.probes.save(folder / PROBES_DIR)
        artifacts["probes"] = PROBES_DIR
    plot_confidence_changes(ev.guess, folder / CONFIDENCE_FILE, class_names=class_names,
                            deleted=list(ev.deleted) if ev.deleted else None)
    artifacts["confidence_change"] = CONFIDENCE_FILE
    if len(ev.probes.input_shape) == 3:
        plot_probe_grid(ev.probes, folder / PROBE_GRID_FILE, class_names=class_names)
        artifacts["probe_grid"] = PROBE_GRID_FILE
    return replace(ev, artifacts=artifacts)


# ---- one cell of an experiment --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedCell:
    """A cell's scenario with the weights actually served (θ_u after the defense) and the utility measured."""

    config: ExperimentConfig
    scenario: Scenario
    served: StateDict  # θ_u as released: what both attacks see
    utility: dict[str, float | None]

    @property
    def served_pair(self) -> ModelPair:
        """(θ, served θ_u): the pair the attacks receive."""
        pair = self.scenario.pair
        return ModelPair(spec=pair.spec, original=pair.original, unlearned=self.served)

    @property
    def deleted(self) -> tuple[int, ...]:
        """The labels of D_u (the deleted class, for a class deletion)."""
        return tuple(sorted({int(c) for c in self.scenario.forget_y.tolist()}))


def check_cell_device(config: ExperimentConfig) -> None:
    """The config's device must exist on this machine (a config itself is valid anywhere)."""
    from unlearnleak.devices import check_device

    try:
        check_device(config.device)
    except ConfigError as exc:
        raise ConfigError(f"device: {str(exc).removesuffix('; use --device cpu')}; run this experiment where "
                          "that device exists, or set `device: cpu` (--set device=cpu)") from exc


def prepare_cell(config: ExperimentConfig, progress: Progress | None = None) -> PreparedCell:
    """Build the scenario (θ0 cached), release θ_u through the defense, measure test accuracy of each model."""
    from unlearnleak.defenses import DefenseContext, defend
    from unlearnleak.training import evaluate

    check_cell_device(config)
    _say(progress, "scenario")
    scn = build_scenario(config.scenario_for_run())
    metrics = dict(scn.record.metrics)
    served = scn.pair.unlearned
    served_accuracy = metrics.get("unlearned_test_accuracy")
    if config.defense is not None:
        _say(progress, f"defense {config.defense.name}")
        x_ft, y_ft = scn.train.x[scn.ft_indices], scn.train.y[scn.ft_indices]
        keep = torch.ones(x_ft.shape[0], dtype=torch.bool)
        keep[scn.forget_positions] = False
        context = DefenseContext(spec=scn.pair.spec, retain_x=x_ft[keep], retain_y=y_ft[keep],
                                 seed=config.cell_seed(), device=config.device)
        served = defend(config.defense.name, served, context, config.defense.params)
        if scn.test is not None:
            model = ModelPair(scn.pair.spec, scn.pair.original, served).model("unlearned", config.device)
            served_accuracy = evaluate(model, scn.test.x, scn.test.y, device=config.device)
    utility = {"original_test_accuracy": metrics.get("original_test_accuracy"),
               "unlearned_test_accuracy": metrics.get("unlearned_test_accuracy"),
               "served_test_accuracy": served_accuracy,
               "base_test_accuracy": metrics.get("base_test_accuracy")}
    return PreparedCell(config=config, scenario=scn, served=served,
                        utility=utility if scn.test is not None else dict.fromkeys(utility))


def _lpips_for(config: ExperimentConfig, image: bool) -> LPIPS | None:
    if not image or "lpips" not in config.metrics:
        return None
    from unlearnleak.metrics import load_lpips

    return load_lpips()


@dataclass(frozen=True)
class CellResult:
    """A cell's prepared scenario and the evaluations of the attacks that ran."""

    prepared: PreparedCell
    feature_recovery: FeatureRecoveryEvaluation | None
    label_inference: LabelInferenceEvaluation | None
    seconds: float

    def row(self) -> dict[str, Any]:
        """The JSON-able results row, built as ``rows.CellResults`` (the runner adds cell, params, config, status
        and seconds, and checks the whole as a ``rows.CellRow``)."""
        p = self.prepared
        scn, cfg = p.scenario, p.config.scenario
        metrics = dict(scn.record.metrics)
        return CellResults.model_validate({
            "dataset": cfg.dataset, "model": cfg.model, "method": cfg.unlearning.method,
            "kind": unlearning_kind(cfg.unlearning.method), "n_train": cfg.n_train,
            "k": int(scn.forget_positions.numel()), "forget": cfg.forget.model_dump(mode="json"),
            "seed": p.config.cell_seed(),
            "defense": None if p.config.defense is None else p.config.defense.model_dump(mode="json"),
            "utility": dict(p.utility),
            "forgetting": {key: metrics.get(key) for key in (
                "original_forget_accuracy", "unlearned_forget_accuracy", "original_retain_accuracy",
                "unlearned_retain_accuracy")},
            "feature_recovery": None if self.feature_recovery is None else self.feature_recovery.result(),
            "label_inference": None if self.label_inference is None else self.label_inference.result(),
        }).to_dict()


def execute_cell(config: ExperimentConfig, folder: Path, *,
                 attacks: Sequence[Attack] = ("feature_recovery", "label_inference"),
                 progress: Progress | None = None, save_pair: bool = False,
                 save_probes: bool = False) -> CellResult:
    """Prepare the cell, run the configured ``attacks`` against the served pair, write artifacts into ``folder``.

    ``save_pair`` also writes the scenario's run folder (pair, knowledge, record) into ``folder/pair``;
    ``save_probes`` the probe set into ``folder/probes``.
    """
    started = time.perf_counter()
    prepared = prepare_cell(config, progress)
    scn = prepared.scenario
    folder.mkdir(parents=True, exist_ok=True)
    if save_pair:
        scn.save(folder / PAIR_DIR)
    seed, device, names = config.cell_seed(), config.device, list(scn.train.classes)
    fr_spec, li_spec = config.attacks.feature_recovery, config.attacks.label_inference
    recovery = inference = None
    if fr_spec is not None and "feature_recovery" in attacks:
        _say(progress, "feature recovery")
        image = len(scn.pair.spec.input_shape) == 3
        truth = (scn.forget_x, scn.forget_y)
        feature_mean = None
        if not image:  # the tabular baseline: the mean row of the pool rows outside D_ft (data a user may hold)
            public = scn.train.x[scn.public_indices()]
            feature_mean = public.float().mean(dim=0) if public.shape[0] else None
        learned = None if fr_spec.learned_prior is None else learned_prior_for(
            fr_spec.learned_prior, pretraining=scn.train.x[scn.config.holdout:], dataset=scn.config.dataset,
            holdout=scn.config.holdout, data_dir=scn.config.data_dir, input_shape=scn.pair.spec.input_shape,
            cache_dir=scn.config.cache_dir)
        recovery = recover_and_evaluate(
            prepared.served_pair, scn.knowledge, fr_spec.model_copy(update={"seed": seed, "device": device}), truth,
            lpips=_lpips_for(config, image), metrics=config.metrics, transform=scn.train.transform,
            feature_mean=feature_mean, learned_prior=learned)
        recovery = write_recovery(recovery, folder, truth=truth, class_names=names)
    if li_spec is not None and "label_inference" in attacks:
        _say(progress, "label inference")
        pair = prepared.served_pair
        original = ModelOracle.from_pair(pair, "original", device=device)
        unlearned = ModelOracle.from_pair(pair, "unlearned", device=device)
        white_box = pair.model("original", device) if li_spec.generator == "gradient" else None
        own = (pair.model("original", device), scn.public) if li_spec.calibration == "own_nulls" else None
        inference = infer_and_evaluate(original, unlearned, li_spec.model_copy(update={"seed": seed, "device": device}),
                                       prepared.deleted, public=scn.public if li_spec.generator == "public" else None,
                                       white_box=white_box, own_nulls=own,
                                       cache=cache_dir(scn.config.cache_dir) / "own_nulls")
        inference = write_inference(inference, folder, class_names=names, save_probes=save_probes)
    return CellResult(prepared, recovery, inference, time.perf_counter() - started)


def run_cell(config: ExperimentConfig, cell_dir: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """One cell (a config with one seed): its results row; artifacts go into ``cell_dir``."""
    return execute_cell(config, Path(cell_dir), progress=progress).row()


def _only(config: ExperimentConfig, attack: Attack) -> None:
    if getattr(config.attacks, attack) is None:
        raise ConfigError(f"attacks.{attack} is null in this config; configure it to run {attack.replace('_', ' ')}")


def run_feature_recovery(config: ExperimentConfig, out: Path, *, progress: Progress | None = None,
                         save_pair: bool = False) -> CellResult:
    """Feature recovery alone on the cell ``config`` (its label inference, if any, is not run)."""
    _only(config, "feature_recovery")
    return execute_cell(config, Path(out), attacks=("feature_recovery",), progress=progress, save_pair=save_pair)


def run_label_inference(config: ExperimentConfig, out: Path, *, progress: Progress | None = None,
                        save_pair: bool = False, save_probes: bool = False) -> CellResult:
    """Label inference alone on the cell ``config`` (its feature recovery, if any, is not run)."""
    _only(config, "label_inference")
    return execute_cell(config, Path(out), attacks=("label_inference",), progress=progress, save_pair=save_pair,
                        save_probes=save_probes)


# ---- publishing the attacks on a saved pair folder (`unlearnleak recover` / `infer-label`) -------------------

RECOVER_RESULTS_FILE = "results.json"
RECOVER_GRID_FILE = "grid.png"
GUESS_FILE = "guess.json"
GUESS_FORMAT = "unlearnleak.infer-label/1"
RECOVER_CELL, INFER_LABEL_CELL = "recover", "infer-label"  # the one cell of each command's run folder


def _one_cell_folder(staged: Path, cell: str, attack: Attack, section: FeatureRecoveryResult | LabelInferenceResult,
                     spec: BaseModel, *, params: dict[str, Any],
                     scenario: dict[str, Any], seed: int | None, seconds: float, started_at: str) -> CellRow:
    """Make the command's output ``staged`` a run folder of one cell (``run_folder.write_one_cell``): its files
    (the section's artifacts, top-level files of the command) copied into cells/<cell>/, results.jsonl, run.json."""
    import shutil
    import sys

    from unlearnleak.storage import environment_record

    cell_dir = staged / CELLS_DIR / cell
    cell_dir.mkdir(parents=True)
    kept: dict[str, str | None] = {}
    for key, name in section.artifacts.items():
        if name is not None and (staged / name).is_file():  # the probes folder stays at the top, for replay
            shutil.copyfile(staged / name, cell_dir / name)
            kept[key] = name
    config = {"name": cell, "command": cell, "attacks": {attack: spec.model_dump(mode="json")}}
    row = CellRow.model_validate({
        "cell": cell, "status": "ok", "params": {"command": cell, **params}, "config": config, "seed": seed,
        "seconds": round(seconds, 3), **scenario, attack: section.model_copy(update={"artifacts": kept})})
    write_one_cell(staged, row, {"command": f"unlearnleak {cell}", "argv": list(sys.argv), "started": started_at,
                                 "finished": _now(), "status": "finished", "environment": environment_record()})
    return row


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def publish_recovery(out: Path, ev: FeatureRecoveryEvaluation, *, truth: tuple[torch.Tensor, torch.Tensor] | None,
                     header: dict[str, Any], started: float, overwrite: bool = False) -> dict[str, Any]:
    """Write ``out`` whole (or not at all): a run folder of one cell (results.jsonl, run.json, cells/recover/) that
    `unlearnleak report` reads, and beside it the reconstruction, its grid (images) and ``results.json`` =
    ``header`` + the reconstruction's summary, its evaluation (None without D_u) and baselines."""
    from unlearnleak.storage import environment_record, output_folder, write_json_atomic

    started_at = _now()
    results: dict[str, Any] = {**header, "reconstruction": ev.reconstruction.summary(), "evaluation": ev.scores,
                               "baselines": ev.baselines, "environment": environment_record()}
    with output_folder(out, overwrite=overwrite) as staged:
        written = write_recovery(ev, staged, truth=truth, grid=RECOVER_GRID_FILE, write_truth=False)
        if "grid" in written.artifacts:
            results["grid"] = written.artifacts["grid"]
        results["total_seconds"] = time.perf_counter() - started
        section = written.result()
        results["feature_recovery"] = section.to_dict()  # the row's section, as in results.jsonl
        write_json_atomic(staged / RECOVER_RESULTS_FILE, results)
        params = {k: header[k] for k in ("preset", "seed") if isinstance(header.get(k), str | int)}
        scenario = header.get("scenario") if isinstance(header.get("scenario"), dict) else {}
        _one_cell_folder(staged, RECOVER_CELL, "feature_recovery", section, ev.spec, params=params,
                         scenario=dict(scenario or {}), seed=header.get("seed"), seconds=results["total_seconds"],
                         started_at=started_at)
    return results


def publish_inference(out: Path, ev: LabelInferenceEvaluation, *, class_names: Sequence[str] | None,
                      save_probes: bool, overwrite: bool = False, scenario: dict[str, Any] | None = None,
                      seed: int | None = None) -> dict[str, Any]:
    """Write ``out`` whole (or not at all): a run folder of one cell (results.jsonl, run.json, cells/infer-label/)
    that `unlearnleak report` reads, and beside it ``guess.json`` (the guess, the ground truth if known, the
    probes' cost, the scored evaluation), the figures and, if asked, the probes for later replay."""
    from unlearnleak.storage import output_folder, write_json_atomic

    started_at = _now()
    probes = ev.probes
    record = {"format": GUESS_FORMAT, "scenario": dict(scenario or {}), "guess": ev.guess.to_dict(),
              "deleted_labels": None if ev.deleted is None else list(ev.deleted),
              "probes": {"generator": probes.generator, "count": len(probes), "accepted": probes.num_accepted,
                         "total_queries": probes.total_queries, "queries_per_accepted": probes.queries_per_accepted,
                         "seconds": probes.seconds, "notes": probes.notes, "params": dict(probes.params)}}
    with output_folder(out, overwrite=overwrite) as staged:
        written = write_inference(ev, staged, class_names=class_names, save_probes=save_probes)
        section = written.result()
        record["evaluation"] = section.to_dict()  # the row's section, as in results.jsonl
        write_json_atomic(staged / GUESS_FILE, record)
        params = {"generator": probes.generator, **({} if seed is None else {"seed": seed})}
        # the cell's seconds: the probes' making (their replay to θ_u is one query each, a small part of it)
        _one_cell_folder(staged, INFER_LABEL_CELL, "label_inference", section, ev.spec, params=params,
                         scenario=dict(scenario or {}), seed=seed, seconds=probes.seconds, started_at=started_at)
    return record
