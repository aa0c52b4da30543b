"""Audit one's own unlearning: the user's files or endpoints → the same attacks → report.json + verdict.

White-box (:func:`pair_from_files`): the user names the model definition (the only code that runs), the two
checkpoints and, optionally, θ0, N, k and the labels; everything is checked before anything is computed.
Black-box: two :class:`~unlearnleak.oracle_http.HttpOracle` endpoints. :func:`run_audit` runs the attacks
stage by stage; a query budget that runs out or a Ctrl-C keeps what finished and marks the report partial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unlearnleak.attacks.feature_recovery import Reconstruction, evaluate_reconstruction
from unlearnleak.attacks.interface import FeatureRecovery, LabelInference, LabelInferenceResult
from unlearnleak.audit.checkpoint import read_checkpoint, to_normalized_layout
from unlearnleak.errors import CheckpointError, ConfigError, QueryBudgetExceeded
from unlearnleak.knowledge import ServerKnowledge, check_finite, read_safetensors
from unlearnleak.metrics import baseline_images, psnr
from unlearnleak.models import ModelSpec, build_model, check_state
from unlearnleak.oracle import ModelOracle, Oracle
from unlearnleak.pair import ModelPair
from unlearnleak.storage import environment_record, save_tensors_atomic, write_json_atomic

REPORT_FILE = "report.json"
RECONSTRUCTIONS_FILE = "reconstructions.safetensors"
FORMAT = "unlearnleak.audit/1"


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
        state = to_normalized_layout(read_checkpoint(path, flag), model)
        check_state(model, state, f"{flag} {path} ({symbol})")
        check_finite(state, f"{symbol} ({flag} {path})")
        states[flag] = state
    if all(torch.equal(states["--original"][k], states["--unlearned"][k]) for k in states["--original"]):
        raise CheckpointError(f"no difference — nothing to attack: --original {original} and --unlearned "
                              f"{unlearned} hold identical weights (was the unlearned model saved after unlearning?)")
    return ModelPair(spec, states["--original"], states["--unlearned"]), states.get("--base")


def _check_input_shape(model: torch.nn.Module, spec: ModelSpec) -> None:
    flag = "--input-shape" if len(spec.input_shape) == 3 else "--features"
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *spec.input_shape))
    except Exception as exc:  # user code may raise anything on a wrong shape
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"the model rejects inputs of shape {tuple(spec.input_shape)} ({flag}): "
                          f"{type(exc).__name__}: {text[:200]}; give the shape it was trained on") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, spec.num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
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
              inputs: dict[str, Any] | None = None) -> AuditOutcome:
    """Run the attacks that the inputs allow, write report.json (+ tensors, figures) into ``out``.

    With a pair, both attacks run (the label attack through in-process oracles of θ and θ_u); with oracles
    only, the label attack. A budget that runs out or a Ctrl-C stops the run; what finished is written and
    the report says ``"partial": true`` with the reason.
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
            rec = feature_recovery.attack(pair, knowledge)
            outcome.reconstruction = rec
            report["timing"]["feature_recovery_seconds"] = time.perf_counter() - t0
            report["attacks"].append({"name": "feature_recovery", "attack": repr(feature_recovery),
                                      "knowledge_used": list(rec.config.get("knowledge_used", [])),
                                      "result": rec.summary()})
            _save_reconstruction(out, rec, pair.spec)
        if label_inference is not None and original_oracle is not None and unlearned_oracle is not None:
            t0 = time.perf_counter()
            result = label_inference.attack(original_oracle, unlearned_oracle)
            outcome.labels = result
            report["timing"]["label_inference_seconds"] = time.perf_counter() - t0
            probes = result.probes
            report["attacks"].append({"name": "label_inference", "attack": repr(label_inference),
                                      "knowledge_used": list(result.knowledge_used),
                                      "guess": None if result.guess is None else result.guess.to_dict(),
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
        report["evaluation"] = _evaluate(outcome.reconstruction, ground_truth, pair)
    report["queries"] = _queries(original_oracle, unlearned_oracle)
    report["timing"]["total_seconds"] = time.perf_counter() - started
    outcome.verdict = verdict(report)
    report["verdict"] = outcome.verdict
    _figures(out, outcome, ground_truth)
    write_json_atomic(out / REPORT_FILE, report)
    _html(out)
    return outcome


def _device(attack: FeatureRecovery | None) -> str:
    return attack.config.device if attack is not None else "cpu"


def _save_reconstruction(out: Path, rec: Reconstruction, spec: ModelSpec) -> None:
    key = "images" if rec.kind == "image" else "rows"
    save_tensors_atomic(out / RECONSTRUCTIONS_FILE, {key: rec.x.float().cpu(), "labels": rec.labels.cpu()},
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
    return section or None


def image_baselines(truth: torch.Tensor, dataset_mean: Sequence[float] | None) -> dict[str, torch.Tensor]:
    """Per-sample PSNR of each baseline (``unlearnleak.metrics.baselines``), keyed ``<name>_psnr``."""
    return {f"{name}_psnr": psnr(images, truth) for name, images in baseline_images(truth, dataset_mean).items()}


def _evaluate(rec: Reconstruction, truth: tuple[torch.Tensor, torch.Tensor | None],
              pair: ModelPair | None) -> dict[str, Any]:
    x, y = truth
    if tuple(x.shape) != tuple(rec.x.shape):
        raise ConfigError(f"--ground-truth holds shape {tuple(x.shape)} but the reconstruction is "
                          f"{tuple(rec.x.shape)}; give the k deleted samples (or --forget-size k)")
    labels = y if y is not None else rec.labels
    result = evaluate_reconstruction(rec, x, labels, None)
    if rec.kind == "image":
        for name, values in image_baselines(x.float(), None if pair is None else pair.spec.mean).items():
            for sample, v in zip(result["samples"], values.tolist(), strict=True):
                sample[name] = v
            result["mean"][name] = float(values.mean())
    result["labels_known"] = y is not None
    return result


def _queries(original: Oracle | None, unlearned: Oracle | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, oracle in (("original", original), ("unlearned", unlearned)):
        if oracle is not None:
            out[name] = {"rows": oracle.queries, "budget": oracle.budget,
                         "requests": getattr(oracle, "requests", None)}
    return out


def verdict(report: dict[str, Any]) -> list[str]:
    """Plain-language lines: what leaked, and how confidently."""
    lines: list[str] = []
    labels = report.get("labels") or {}
    pred = labels.get("from_predictions")
    if pred is not None:
        changes = pred["confidence_changes"]
        best = pred["best"]
        if pred.get("verdict") == "no_verdict":
            lines.append(f"NO LABEL VERDICT (black-box): classes {pred['lacking']} have too few probes "
                         f"({pred['reason']}); nothing was ranked or tested.")
        elif pred["detected"]:
            lines.append(f"LABEL LEAKED (black-box): class {best}'s confidence fell by {changes[best]:+.3g} "
                         f"({pred['statistic']}), beyond the detection level {pred['detection_level']:+.3g} set "
                         f"by the other classes' spread: a user with these queries can tell which class was deleted.")
        else:
            lines.append(f"No detectable label leak (black-box): no class's confidence change stands out from the "
                         f"spread across probes (largest drop: class {best}, {changes[best]:+.3g}); more probes may "
                         f"still reveal it.")
    weights = labels.get("from_weights")
    fr = next((a for a in report["attacks"] if a["name"] == "feature_recovery"), None)
    if fr is not None and weights is not None:
        cost = fr["result"]["best_cost"]
        lines.append(f"White-box: the weight change points at {len(weights['labels'])} deleted sample(s) of "
                     f"class(es) {weights['labels']} ({weights['source']}); the recovered input explains it with "
                     f"gradient cosine {1 - cost:.3f} (1 = perfectly); knowledge used: "
                     f"{', '.join(fr['knowledge_used']) or 'θ and θ_u only'}.")
    evaluation = report.get("evaluation")
    if evaluation is not None and "psnr" in evaluation["mean"]:
        m = evaluation["mean"]
        leaked = m["psnr"] > m["thumbnail_4x4_psnr"]
        lines.append(f"{'IMAGE LEAKED' if leaked else 'Image not recovered beyond a thumbnail'}: PSNR "
                     f"{m['psnr']:.2f} dB vs {m['thumbnail_4x4_psnr']:.2f} dB for a 4×4 thumbnail and "
                     f"{m['own_mean_colour_psnr']:.2f} dB for its own mean colour (label accuracy "
                     f"{evaluation['label_accuracy']:.2f}).")
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
            save_reconstruction_grid(out / "reconstructions.png", ground_truth[0], shown, captions=captions)
        else:
            save_reconstruction_grid(out / "reconstructions.png", None, rec.x)
    if outcome.labels is not None and outcome.labels.guess is not None:
        plot_confidence_changes(outcome.labels.guess, out / "confidence_change.png")
