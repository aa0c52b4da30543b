"""Audit one's own unlearning: the user's files or endpoints → the same attacks → report.json + verdict.

The folder is also a run folder of one cell (``audit.run_row``: results.jsonl, run.json, cells/audit/).

White-box (:func:`pair_from_files`): the user names the model definition (the only code that runs), the two
checkpoints and, optionally, θ0, N, k and the labels; everything is checked before anything is computed.
Black-box: two :class:`~unlearnleak.oracle_http.HttpOracle` endpoints. :func:`run_audit` runs the attacks
stage by stage; a query budget that runs out or a Ctrl-C keeps what finished and marks the report partial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from unlearnleak.attacks.feature_recovery import Reconstruction, costs_on_target, evaluate_reconstruction
from unlearnleak.attacks.feature_recovery.facade import FeatureRecovery
from unlearnleak.attacks.feature_recovery.learned_prior import FEATURES_ONLY
from unlearnleak.attacks.label_inference import Calibration, ProbeSet
from unlearnleak.attacks.label_inference.facade import LabelInference, LabelInferenceResult
from unlearnleak.attacks.label_inference.own_nulls import own_null_calibrator
from unlearnleak.audit.checkpoint import read_checkpoint, to_normalized_layout
from unlearnleak.audit.run_row import write_audit_cell
from unlearnleak.cache import cache_dir
from unlearnleak.errors import CheckpointError, ConfigError, QueryBudgetExceeded
from unlearnleak.experiments.console import iteration_progress
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.metrics import baseline_images, image_metrics, load_lpips, psnr
from unlearnleak.models import ModelSpec, build_model, check_state
from unlearnleak.oracle import ModelOracle, Oracle
from unlearnleak.pair import ModelPair
from unlearnleak.storage import (
    check_finite,
    environment_record,
    read_safetensors,
    save_tensors_atomic,
    write_json_atomic,
)

REPORT_FILE = "report.json"
RECONSTRUCTIONS_FILE = "reconstructions.safetensors"
GRID_FILE = "reconstructions.png"
CONFIDENCE_FILE = "confidence_change.png"
FORMAT = "unlearnleak.audit/1"
# LabelGuess fields the shared label verdict (unlearnleak.verdicts) uses when a guess records them
LABEL_EXTRA = ("state", "verdict", "lacking", "classes_without_probes", "rank", "min_per_class", "reason")


def pair_from_files(model_def: str, *, original: str | Path, unlearned: str | Path, input_shape: Sequence[int],
                    num_classes: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    model_kwargs: dict[str, Any] | None = None,
                    base: str | Path | None = None) -> tuple[ModelPair, dict[str, torch.Tensor] | None]:
    """The user's pair (and θ0) from their files, checked: architecture, shapes, finite values, a difference.

    Raises:
        ConfigError / CheckpointError: one clear line naming the flag or file at fault.
    """
    shape = tuple(int(v) for v in input_shape)
    n = shape[0] if len(shape) == 3 else 1  # one constant per channel (images) or one for all features
    spec = ModelSpec(name=model_def, input_shape=shape, num_classes=num_classes,
                     mean=tuple(mean) if mean else (0.0,) * n, std=tuple(std) if std else (1.0,) * n,
                     kwargs=dict(model_kwargs or {}))
    model = build_model(spec)  # runs the user's named definition (and only that)
    _check_input_shape(model, spec)
    states: dict[str, dict[str, torch.Tensor]] = {}
    for flag, path, symbol in (("--original", original, "θ"), ("--unlearned", unlearned, "θ_u"),
                               ("--base", base, "θ0")):
        if path is None:
            continue
        state = to_normalized_layout(read_checkpoint(path, flag), model, f"{flag} {path} ({symbol})")
        check_state(model, state, f"{flag} {path} ({symbol})")
        check_finite(state, f"{symbol} ({flag} {path})")
        states[flag] = state
    if all(torch.equal(states["--original"][k], states["--unlearned"][k]) for k in states["--original"]):
        raise CheckpointError(f"no difference — nothing to attack: --original {original} and --unlearned "
                              f"{unlearned} hold identical weights (was the unlearned model saved after unlearning?)")
    return ModelPair(spec, states["--original"], states["--unlearned"]), states.get("--base")


def _check_input_shape(model: torch.nn.Module, spec: ModelSpec) -> None:
    """The built model is float32 and answers (n, K) logits for inputs of the declared shape."""
    flag = "--input-shape" if len(spec.input_shape) == 3 else "--features"
    tensors = [*model.named_parameters(), *model.named_buffers()]
    odd = next(((name, t.dtype) for name, t in tensors if t.is_floating_point() and t.dtype != torch.float32), None)
    if odd is not None:
        raise ConfigError(f"{spec.name} builds {odd[0].removeprefix('net.')} in "
                          f"{str(odd[1]).removeprefix('torch.')}; the audit runs the model in float32: build it in "
                          f"float32 (drop .double()/.half() from the definition; checkpoints of any float dtype "
                          f"are read)")
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *spec.input_shape))
    except Exception as exc:  # user code may raise anything on a wrong shape
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"the model rejects inputs of shape {tuple(spec.input_shape)} ({flag}): "
                          f"{type(exc).__name__}: {text[:200]}; give the shape it was trained on") from None
    if not isinstance(out, torch.Tensor):
        pick = f"[{next(iter(out))!r}]" if isinstance(out, dict) and out else "[0]"
        raise ConfigError(f"the model's forward returns a {type(out).__name__}; the audit needs one tensor of "
                          f"logits (n, {spec.num_classes}): name a subclass whose forward returns only the logits "
                          f"(e.g. return super().forward(x){pick}) in --model-def")
    if tuple(out.shape) == (2, 1):
        raise ConfigError("the model answers one output per input (a sigmoid/BCE classifier); the attacks work on "
                          "K ≥ 2 softmax logits: name a subclass whose forward returns torch.cat([torch.zeros_like(z),"
                          " z], 1) for its output z (the same probabilities and gradients) and give --num-classes 2")
    if tuple(out.shape) != (2, spec.num_classes):
        got = tuple(out.shape)
        raise ConfigError(f"the model answers {got} for 2 inputs of shape {tuple(spec.input_shape)}; expected "
                          f"(2, {spec.num_classes}) logits (--num-classes, {flag})")


def read_ground_truth(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """D_u for evaluation: a safetensors file with ``images`` (or ``rows``/``forget_x``) and optionally ``labels``."""
    tensors = read_safetensors(Path(path), "--ground-truth")
    x = next((tensors[k] for k in ("images", "rows", "forget_x") if k in tensors), None)
    if x is None:
        raise CheckpointError(f"--ground-truth {path} lacks 'images' (k×C×H×W in [0,1]) or 'rows' (k×D)")
    y = next((tensors[k] for k in ("labels", "forget_y") if k in tensors), None)
    return x.float(), None if y is None else y.long().flatten()


@dataclass
class AuditOutcome:
    """What the audit produced: the report (JSON), and the attack results behind it."""

    report: dict[str, Any]
    reconstruction: Reconstruction | None = None
    labels: LabelInferenceResult | None = None
    verdict: list[str] = field(default_factory=list)
    interrupted: bool = False  # a Ctrl-C stopped the run; the report holds the finished stages


def run_audit(out: Path, *, pair: ModelPair | None = None, knowledge: ServerKnowledge | None = None,
              original_oracle: Oracle | None = None, unlearned_oracle: Oracle | None = None,
              feature_recovery: FeatureRecovery | None = None, label_inference: LabelInference | None = None,
              ground_truth: tuple[torch.Tensor, torch.Tensor | None] | None = None,
              inputs: dict[str, Any] | None = None, own_nulls: tuple[torch.Tensor, torch.Tensor] | None = None,
              calibration_note: str | None = None) -> AuditOutcome:
    """Run the attacks that the inputs allow, write report.json (+ tensors, figures) into ``out``.

    With a pair, both attacks run (the label attack through in-process oracles of θ and θ_u); with oracles
    only, the label attack. A budget that runs out or a Ctrl-C stops the run; what finished is written and
    the report says ``"partial": true`` with the reason. ``own_nulls``: labelled public rows (x, y) on which the
    label verdict is calibrated with null pairs of θ itself (a pair is needed); ``calibration_note``: why it
    is not, said beside the verdict.
    """
    started = time.perf_counter()
    knowledge = knowledge or ServerKnowledge()
    if pair is not None and original_oracle is None:
        original_oracle = ModelOracle.from_pair(pair, "original", device=_device(feature_recovery))
        unlearned_oracle = ModelOracle.from_pair(pair, "unlearned", device=_device(feature_recovery))
    report: dict[str, Any] = {
        "format": FORMAT, "mode": "white-box" if pair is not None else "black-box", "partial": False,
        "partial_reason": None, "inputs": inputs or {}, "knowledge": knowledge.describe(), "attacks": [],
        "labels": None, "evaluation": None, "verdict": [], "queries": {}, "timing": {},
        "environment": environment_record(),
    }
    outcome = AuditOutcome(report)
    try:
        if pair is not None and feature_recovery is not None:
            t0 = time.perf_counter()
            with iteration_progress("feature recovery: inversion steps", _steps(feature_recovery)):
                rec = feature_recovery.attack(pair, knowledge)
            outcome.reconstruction = rec
            report["timing"]["feature_recovery_seconds"] = time.perf_counter() - t0
            report["attacks"].append({"name": "feature_recovery", "attack": repr(feature_recovery),
                                      "knowledge_used": list(rec.config.get("knowledge_used", [])),
                                      "result": rec.summary()})
            _save_reconstruction(out, rec, pair.spec)
        if label_inference is not None and original_oracle is not None and unlearned_oracle is not None:
            t0 = time.perf_counter()
            result = label_inference.attack(original_oracle, unlearned_oracle,
                                            calibrate=_own_null_calibrator(pair, label_inference, own_nulls))
            if calibration_note is not None:
                result = replace(result, calibration_info={"note": calibration_note})
            outcome.labels = result
            report["timing"]["label_inference_seconds"] = time.perf_counter() - t0
            probes = result.probes
            report["attacks"].append({"name": "label_inference", "attack": repr(label_inference),
                                      "knowledge_used": list(result.knowledge_used),
                                      "guess": None if result.guess is None else result.guess.to_dict(),
                                      "calibration": dict(result.calibration_info) or None,
                                      "probes": None if probes is None else {
                                          "count": len(probes), "accepted": probes.num_accepted,
                                          "total_queries": probes.total_queries, "notes": probes.notes}})
            if result.partial:
                report["partial"], report["partial_reason"] = True, result.partial
    except QueryBudgetExceeded as exc:
        report["partial"], report["partial_reason"] = True, f"query budget exhausted: {exc}"
    except KeyboardInterrupt:
        outcome.interrupted = True
        report["partial"], report["partial_reason"] = True, "interrupted (Ctrl-C); the finished stages are kept"
    report["labels"] = _labels_section(outcome)
    if ground_truth is not None and outcome.reconstruction is not None:
        given_mean = (inputs or {}).get("mean")
        report["evaluation"] = _evaluate(outcome.reconstruction, ground_truth,
                                         None if pair is None or given_mean is None else pair.spec.mean)
        if pair is not None:  # how closely the deleted samples themselves explain ∇*, beside the reconstruction
            rec, (x, y) = outcome.reconstruction, ground_truth
            ours, truth = costs_on_target(pair, knowledge, rec, [(rec.x, rec.labels),
                                                                 (x, y if y is not None else rec.labels)],
                                          _device(feature_recovery))
            report["evaluation"]["gradient_cost"] = {"reconstruction": ours, "deleted_samples": truth}
    report["queries"] = _queries(original_oracle, unlearned_oracle)
    report["timing"]["total_seconds"] = time.perf_counter() - started
    outcome.verdict = verdict(report)
    report["verdict"] = outcome.verdict
    _figures(out, outcome, ground_truth)
    write_json_atomic(out / REPORT_FILE, report)
    write_audit_cell(out, outcome, ground_truth, {"reconstruction": RECONSTRUCTIONS_FILE, "grid": GRID_FILE,
                                                  "confidence_change": CONFIDENCE_FILE})
    _html(out)
    return outcome


def _own_null_calibrator(pair: ModelPair | None, attack: LabelInference,
                         rows: tuple[torch.Tensor, torch.Tensor] | None) -> Callable[[ProbeSet], Calibration] | None:
    """The threshold from null pairs of θ itself on the labelled public ``rows`` (None: no pair or no rows)."""
    if pair is None or rows is None:
        return None
    return own_null_calibrator(pair.model("original", attack.config.device), rows[0], rows[1], attack.config,
                               cache=cache_dir() / "own_nulls")


def _steps(attack: FeatureRecovery) -> int | None:
    """The inversion's optimiser steps, for its progress (None: bounded by time, not steps)."""
    from unlearnleak.attacks.feature_recovery import PRESETS

    config = attack.config
    if config.time_budget is not None:
        return None
    return config.iterations or (PRESETS.get(config.preset).iterations if config.preset in PRESETS else None)


def _device(attack: FeatureRecovery | None) -> str:
    return attack.config.device if attack is not None else "cpu"


def _save_reconstruction(out: Path, rec: Reconstruction, spec: ModelSpec) -> None:
    key = "images" if rec.kind == "image" else "rows"
    tensors = {key: rec.x.float().cpu(), "labels": rec.labels.cpu()}
    if rec.decoded is not None:
        tensors["decoded"] = rec.decoded.float().cpu()  # the learned prior's decoded images alone
    save_tensors_atomic(out / RECONSTRUCTIONS_FILE, tensors,
                        {"format": FORMAT, "units": "pixels in [0, 1]" if key == "images" else "model input units"})


def _labels_section(outcome: AuditOutcome) -> dict[str, Any] | None:
    rec, li = outcome.reconstruction, outcome.labels
    section: dict[str, Any] = {}
    if rec is not None:
        section["from_weights"] = {"labels": rec.labels.tolist(), "source": rec.label_source,
                                   "scores": None if rec.label_scores is None else rec.label_scores.tolist()}
    if li is not None and li.guess is not None:
        g = li.guess
        section["from_predictions"] = {"verdict": g.verdict, "reason": g.reason, "lacking": list(g.lacking),
                                       "predicted": list(g.predicted), "best": g.best, "detected": g.detected,
                                       "ranked": list(g.ranked), "p_value": g.p_value, "level": g.level,
                                       "confidence_changes": [None if math.isnan(v) else v for v in g.changes],
                                       "probe_counts": list(g.probe_counts), "statistic": g.statistic,
                                       "detection_level": g.threshold, "queries_original": g.queries_original,
                                       "queries_unlearned": g.queries_unlearned}
        extra = g.to_dict()  # the verdict state, the classes lacking probes, the minimum and why
        section["from_predictions"].update({k: extra[k] for k in LABEL_EXTRA if k in extra})
        section["from_predictions"].update({"calibration": g.calibration,
                                            "calibration_info": dict(li.calibration_info) or None})
    return section or None


def image_baselines(truth: torch.Tensor, dataset_mean: Sequence[float] | None,
                    lpips: Any = None) -> dict[str, list[float | None]]:
    """Per-sample PSNR, SSIM and LPIPS (None without its weights or for small images) of each baseline
    (``unlearnleak.metrics.baselines``), keyed ``<name>_psnr``, ``<name>_ssim``, ``<name>_lpips``."""
    out: dict[str, list[float | None]] = {}
    for name, images in baseline_images(truth, dataset_mean).items():
        rows = image_metrics(images, truth, lpips=lpips)
        out[f"{name}_psnr"] = [float(v) for v in psnr(images, truth).tolist()]
        for metric in ("ssim", "lpips"):
            out[f"{name}_{metric}"] = [row[metric] for row in rows]
    return out


def _evaluate(rec: Reconstruction, truth: tuple[torch.Tensor, torch.Tensor | None],
              dataset_mean: Sequence[float] | None) -> dict[str, Any]:
    """Score the reconstruction (PSNR, SSIM, LPIPS when its weights are found) and each baseline's PSNR;
    ``dataset_mean``: the user's normalisation mean (--mean), the dataset's mean colour; None: not given."""
    x, y = truth
    if tuple(x.shape) != tuple(rec.x.shape):
        raise ConfigError(f"--ground-truth holds shape {tuple(x.shape)} but the reconstruction is "
                          f"{tuple(rec.x.shape)}; give the k deleted samples (or --forget-size k)")
    labels = y if y is not None else rec.labels
    image = rec.kind == "image"
    lpips = load_lpips() if image else None  # None when no weights are found: LPIPS is then reported as n/a
    result = evaluate_reconstruction(rec, x, labels, lpips)
    result["lpips_available"] = lpips is not None if image else None
    if image:
        for name, values in image_baselines(x.float(), dataset_mean, lpips).items():
            for sample, v in zip(result["samples"], values, strict=True):
                sample[name] = v
            present = [v for v in values if v is not None]
            result["mean"][name] = sum(present) / len(present) if present else None
    result["labels_known"] = y is not None
    if rec.decoded is not None:  # the learned prior's decoded images alone: a feature-inversion attack of its own
        alone = evaluate_reconstruction(replace(rec, x=rec.decoded), x, labels, None)
        result["decoder_alone"] = {"mean": alone["mean"], "psnr": [s["psnr"] for s in alone["samples"]]}
    return result


def _queries(original: Oracle | None, unlearned: Oracle | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, oracle in (("original", original), ("unlearned", unlearned)):
        if oracle is not None:
            out[name] = {"rows": oracle.queries, "budget": oracle.budget,
                         "requests": getattr(oracle, "requests", None)}
    return out


# The deleted samples explain ∇* this many times better than the reconstruction: the search stopped short of them.
SHORT_OF_TRUTH = 10.0


def _match(evaluation: dict[str, Any] | None, cost: float) -> str:
    """How closely the recovered input reproduces ∇* (1 − cosine); with ``--ground-truth``, beside the deleted
    samples' own match, and a warning when an image shows no more than its 4×4 thumbnail although the deleted
    samples explain ∇* far better: then the search failed, which does not make the deletion safe (docs/audit.md)."""
    costs = (evaluation or {}).get("gradient_cost")
    if costs is None:
        return f"reproduces the weight change to 1 − cosine {cost:.1e} (0 = exactly)"
    ours, truth = costs["reconstruction"], costs["deleted_samples"]
    clause = (f"reproduces the weight change to 1 − cosine {ours:.1e} (0 = exactly), the deleted sample(s) "
              f"themselves to {truth:.1e}")
    mean = (evaluation or {}).get("mean", {})
    psnr, thumbnail = mean.get("psnr"), mean.get("thumbnail_4x4_psnr")
    if psnr is not None and thumbnail is not None and psnr <= thumbnail and ours > SHORT_OF_TRUTH * max(truth, 1e-300):
        clause += (" — the deleted data explain the weight change far better than the recovered input, so the "
                   "search stopped short: a stronger attack may recover more than this audit shows")
    return clause


def verdict(report: dict[str, Any]) -> list[str]:
    """Plain-language lines: what leaked, in the shared wording of unlearnleak.verdicts (baselines, p-values)."""
    from unlearnleak.verdicts import gradient_label_phrase, image_verdict, label_verdict, tabular_verdict

    lines: list[str] = []
    labels = report.get("labels") or {}
    pred = labels.get("from_predictions")
    if pred is not None:
        lines.append(f"Label inference (black-box): {label_verdict(pred).sentence}.")
        note = (pred.get("calibration_info") or {}).get("note")
        if note:
            lines.append(f"note: {note}")
    weights = labels.get("from_weights")
    fr = next((a for a in report["attacks"] if a["name"] == "feature_recovery"), None)
    evaluation = report.get("evaluation")
    if fr is not None and weights is not None:
        cost = fr["result"]["best_cost"]
        given = weights["source"] == "given"
        known = "" if given or evaluation is None or not evaluation.get("labels_known") else \
            f" ({gradient_label_phrase(evaluation.get('label_accuracy'), len(evaluation['samples']))})"
        named = f"with the given class(es) {weights['labels']} of the" if given else \
            f"the weight change names class(es) {weights['labels']} for the"
        lines.append(f"Feature recovery (white-box): {named} {len(weights['labels'])} deleted sample(s) "
                     f"({weights['source']}){known}; the recovered input "
                     f"{_match(evaluation, cost)}; knowledge "
                     f"used: {', '.join(fr['knowledge_used']) or 'θ and θ_u only'}.")
    prior = None if fr is None else fr["result"]["config"].get("learned_prior")
    if prior is not None and prior.get("status") != "on":
        lines.append(f"learned prior: off — {prior.get('reason')}")
    elif prior is not None:
        reads = prior.get("inputs", FEATURES_ONLY)
        extra = "" if reads == FEATURES_ONLY else f" (it reads {reads})"
        lines.append(f"learned prior: on — decoder trained on {prior['decoder_model']}'s features of "
                     f"{prior['data']['source']}{extra}; the decoded image raced as a start and a prior beside "
                     f"the other recipes.")
    if evaluation is not None and "decoder_alone" in evaluation:
        lines.append(f"Decoder alone (feature inversion from the features ∇* gives away): PSNR "
                     f"{evaluation['decoder_alone']['mean']['psnr']:.2f} dB.")
    if evaluation is not None and "psnr" in evaluation["mean"]:
        m = evaluation["mean"]
        image = image_verdict(m.get("psnr"), {name: {metric: m.get(f"{name}_{metric}") for metric in
                                                     ("psnr", "ssim", "lpips")}
                                              for name in ("dataset_mean_colour", "own_mean_colour", "thumbnail_4x4")
                                              if m.get(f"{name}_psnr") is not None},
                              ssim=m.get("ssim"), lpips=m.get("lpips"))
        if image is not None:
            lines.append(f"Image: {image.sentence}.")
    elif evaluation is not None and "mse" in evaluation["mean"]:
        rows = tabular_verdict(evaluation["mean"].get("mse"), evaluation["mean"].get("feature_mean_mse"))
        if rows is not None:
            lines.append(f"Rows: {rows.sentence}.")
    if report.get("partial"):
        lines.append(f"PARTIAL: {report['partial_reason']}")
    return lines or ["Nothing was attacked."]


def _html(out: Path) -> None:
    """report.html: the same self-contained page as `unlearnleak report` (verdict, figures, provenance)."""
    from unlearnleak.report.audit_page import write_audit_html

    write_audit_html(out)


def _figures(out: Path, outcome: AuditOutcome,
             ground_truth: tuple[torch.Tensor, torch.Tensor | None] | None) -> None:
    from unlearnleak.report.grids import save_reconstruction_grid
    from unlearnleak.report.label_figures import plot_confidence_changes

    rec = outcome.reconstruction
    if rec is not None and rec.kind == "image":
        evaluation = outcome.report.get("evaluation")
        if ground_truth is not None and evaluation is not None:
            shown = rec.x[torch.tensor(evaluation["assignment"])]
            captions = [f"{s['psnr']:.1f}dB" for s in evaluation["samples"]]
            save_reconstruction_grid(out / GRID_FILE, ground_truth[0], shown, captions=captions)
        else:
            save_reconstruction_grid(out / GRID_FILE, None, rec.x)
    if outcome.labels is not None and outcome.labels.guess is not None:
        plot_confidence_changes(outcome.labels.guess, out / CONFIDENCE_FILE)
