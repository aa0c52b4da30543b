"""Per-model calibration from the audited model's own null pairs: a class that drifts after any update of
this model is not "detected", a real drop still is, and identical models never are."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from constructed_probes import SHAPE, K, constructed_probes
from torch import nn

from unlearnleak.attacks.label_inference import (
    DecisionConfig,
    ProbeSet,
    calibrate_on_own_model,
    calibrate_on_own_nulls,
    confidence_changes,
    infer_label,
    own_null_changes,
)
from unlearnleak.errors import ConfigError
from unlearnleak.oracle import FunctionOracle, ModelOracle

LEVEL = 0.05
PER_CLASS = 4
DRIFT = {1: 2.0}  # class 1 loses 2 log-odds on every null pair of this model (one SGD step on a ResNet did)


def _probes() -> ProbeSet:
    """Probes at p_c = 0.9995, PER_CLASS per class; one pixel identifies each probe."""
    return constructed_probes(PER_CLASS)


def _moved(probes: ProbeSet, g: torch.Generator, drop: dict[int, float]) -> FunctionOracle:
    """θ_u: class 1 drifts by DRIFT (± 2 %), every probe moves by ± 0.05 log-odds, deleted classes by ``drop``."""
    logodds0 = torch.log(probes.confidence / (1 - probes.confidence))
    shift = 0.05 * torch.randn(len(probes), generator=g, dtype=torch.float64)
    for c, d in {**{c: d * (1 + 0.02 * float(torch.randn(1, generator=g))) for c, d in DRIFT.items()}}.items():
        shift[probes.target == c] -= d
    for c, d in drop.items():
        shift[probes.target == c] -= d
    own = torch.sigmoid(logodds0 + shift)
    after = ((1 - own) / (K - 1))[:, None].repeat(1, K)
    after[torch.arange(len(probes)), probes.target] = own
    return FunctionOracle(lambda x: after[x[:, 0, 0, 0].long()], num_classes=K, input_shape=SHAPE)


def _stored(probes: ProbeSet) -> FunctionOracle:
    return FunctionOracle(lambda x: probes.original_proba[x[:, 0, 0, 0].long()], num_classes=K, input_shape=SHAPE)


def _own_nulls(probes: ProbeSet, n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [confidence_changes(probes.original_proba, _moved(probes, g, {}).predict_proba(probes.x),
                               probes.predicted)[1] for _ in range(n)]


def test_a_class_that_drifts_on_every_null_pair_is_not_detected_but_a_deletion_is() -> None:
    """The model's own drift (class 1 −2 log-odds on every null pair) fools a threshold from elsewhere; the
    calibration on this model's null pairs holds 5 % on fresh ones and still finds deleted classes."""
    probes = _probes()
    config = DecisionConfig(min_per_class=PER_CLASS)
    cal = calibrate_on_own_nulls(_own_nulls(probes, 200, seed=1), level=LEVEL)
    assert cal.method == "own_nulls" and "200 null pairs" in cal.source and math.isfinite(cal.threshold)
    g = torch.Generator().manual_seed(2)
    elsewhere = infer_label(_stored(probes), _moved(probes, g, {}), probes, config=config)  # Gaussian threshold
    assert elsewhere.detected and elsewhere.label == 1  # the drift every update of this model makes
    n = 400
    hits = sum(infer_label(_stored(probes), _moved(probes, g, {}), probes, config=config, calibration=cal).detected
               for _ in range(n))
    assert (hits / n - LEVEL) / math.sqrt(LEVEL * (1 - LEVEL) / n) < 2.576, hits
    for c in (3, 1):  # a deleted class, and the drifting class deleted (1 log-odds beyond its drift)
        guess = infer_label(_stored(probes), _moved(probes, g, {c: 1.0}), probes, config=config, calibration=cal)
        assert guess.detected and guess.label == c and guess.calibration == "own_nulls"
        assert guess.p_value is not None and guess.p_value <= LEVEL


def test_identical_models_are_never_detected_under_an_own_calibration() -> None:
    """All-zero changes sit 40 spreads above class 1's usual drift, and drop nowhere: not detected."""
    probes = _probes()
    cal = calibrate_on_own_nulls(_own_nulls(probes, 60, seed=1), level=LEVEL)
    guess = infer_label(_stored(probes), _stored(probes), probes, config=DecisionConfig(min_per_class=PER_CLASS),
                        calibration=cal)
    assert not guess.detected and guess.verdict == "not_detected"


def test_too_few_own_null_pairs_are_refused_and_too_few_for_the_level_never_detect() -> None:
    probes = _probes()
    with pytest.raises(ConfigError, match="at least 12"):
        calibrate_on_own_nulls(_own_nulls(probes, 5, seed=1))
    cal = calibrate_on_own_nulls(_own_nulls(probes, 20, seed=1), level=LEVEL)
    assert cal.threshold == math.inf and "too few" in cal.source


IN = (1, 4, 4)


class _Net(nn.Module):
    """A small classifier on 1×4×4 inputs that sends 5·e_c (pixel c lit) to class c."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, K))
        with torch.no_grad():
            self.body[1].weight.copy_(torch.eye(16))
            self.body[1].bias.zero_()
            self.body[3].weight.copy_(torch.eye(K, 16))
            self.body[3].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_own_null_pairs_of_a_torch_model_leave_theta_unchanged_and_find_a_lowered_class(tmp_path: Path) -> None:
    """own_null_changes makes its updates on copies (θ unchanged; same seed, same numbers); with the calibration
    they give, lowering class 2's output bias by 3 is detected as class 2, and θ against itself is not."""
    net = _Net().eval()
    g = torch.Generator().manual_seed(0)
    public_x, public_y = torch.randn(300, *IN, generator=g), torch.randint(0, K, (300,), generator=g)
    probe_x = 0.3 * torch.randn(K * PER_CLASS, 16, generator=g)
    probe_x[torch.arange(K * PER_CLASS), torch.arange(K).repeat(PER_CLASS)] += 5.0
    probe_x = probe_x.reshape(-1, *IN)
    theta = ModelOracle(net, num_classes=K, input_shape=IN)
    before = theta.predict_proba(probe_x)
    target = torch.arange(K).repeat(PER_CLASS)
    assert torch.equal(before.argmax(dim=1), target)
    probes = ProbeSet(x=probe_x, target=target, original_proba=before,
                      queries=torch.ones(len(probe_x), dtype=torch.long),
                      accepted=torch.ones(len(probe_x), dtype=torch.bool), generator="constructed",
                      total_queries=len(probe_x))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    nulls = own_null_changes(net, probes, public_x, public_y, pairs=60, seed=3)
    assert len(nulls) == 60 and all(m.shape == (K,) and not m.isnan().any() for m in nulls)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    again = own_null_changes(net, probes, public_x, public_y, pairs=60, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(nulls, again, strict=True))
    with pytest.raises(ConfigError, match="public rows with labels"):
        own_null_changes(net, probes, public_x, public_y[:10])
    cal = calibrate_on_own_model(net, probes, public_x, public_y, pairs=60, seed=3)
    assert cal.method == "own_nulls" and "null pairs of this model" in cal.source
    cached = [calibrate_on_own_model(net, probes, public_x, public_y, pairs=60, seed=3, cache=tmp_path)
              for _ in range(2)]  # computed once, then read back: the same calibration
    assert len(list(tmp_path.glob("own_nulls-*.safetensors"))) == 1
    assert cached[0] == cached[1] == cal
    assert (cached[0].cost["cached"], cached[1].cost["cached"], cached[1].cost["pairs"]) == (False, True, 60)
    lowered = _Net().eval()
    with torch.no_grad():
        lowered.body[3].bias[2] -= 3.0
    config = DecisionConfig(min_per_class=PER_CLASS)
    guess = infer_label(theta, ModelOracle(lowered, num_classes=K, input_shape=IN), probes, config=config,
                        calibration=cal)
    assert guess.detected and guess.label == 2 and guess.calibration == "own_nulls"
    same = infer_label(theta, ModelOracle(net, num_classes=K, input_shape=IN), probes, config=config,
                       calibration=cal)
    assert not same.detected


def test_own_nulls_by_name_without_theta_says_what_it_needs() -> None:
    """A black-box user cannot make own null pairs: asked by name without them, one ConfigError says so."""
    probes = _probes()
    with pytest.raises(ConfigError, match="needs θ's weights and public rows"):
        infer_label(_stored(probes), _stored(probes), probes,
                    config=DecisionConfig(min_per_class=PER_CLASS, calibration="own_nulls"))


def test_a_run_cell_with_own_nulls_says_so_and_keeps_them_in_the_cache(tmp_path: Path) -> None:
    """`run` holds θ and public rows: `calibration: own_nulls` makes the model's own null pairs once (cache)."""
    from unlearnleak.attacks.label_inference.config import LabelInferenceConfig
    from unlearnleak.commands.demo import label_inference_config
    from unlearnleak.experiments.pipeline import run_cell
    from unlearnleak.experiments.schema import AttacksConfig, ExperimentConfig

    scenario = label_inference_config(0, "cpu").model_copy(update={"cache_dir": str(tmp_path / "cache")})
    config = ExperimentConfig(scenario=scenario, attacks=AttacksConfig(feature_recovery=None, label_inference=(
        LabelInferenceConfig(generator="nes", per_class=5, calibration="own_nulls"))))
    rows = [run_cell(config, tmp_path / f"cell{i}")["label_inference"] for i in range(2)]
    assert rows[0]["calibration"] == "own_nulls" and rows[0]["p_value"] is not None
    assert rows[0]["deleted"] == [3] and rows[0]["verdict"] in ("detected", "not_detected")
    assert len(list((tmp_path / "cache" / "own_nulls").glob("own_nulls-*.safetensors"))) == 1
    assert rows[1]["p_value"] == rows[0]["p_value"] and rows[1]["detected"] == rows[0]["detected"]


def test_own_null_pairs_of_a_model_with_an_unused_parameter(tmp_path: Path) -> None:
    """A parameter forward never uses (a leftover layer of the user's model) gets no update on the null pairs,
    rather than an autograd error."""
    net = _Net().eval()
    net.leftover = nn.Linear(3, 3)  # registered, never called
    g = torch.Generator().manual_seed(0)
    public_x, public_y = torch.randn(50, *IN, generator=g), torch.randint(0, K, (50,), generator=g)
    probe_x = torch.zeros(K * PER_CLASS, 16)
    probe_x[torch.arange(K * PER_CLASS), torch.arange(K).repeat(PER_CLASS)] = 5.0
    probe_x = probe_x.reshape(-1, *IN)
    theta = ModelOracle(net, num_classes=K, input_shape=IN)
    probes = ProbeSet(x=probe_x, target=torch.arange(K).repeat(PER_CLASS), original_proba=theta.predict_proba(probe_x),
                      queries=torch.ones(len(probe_x), dtype=torch.long),
                      accepted=torch.ones(len(probe_x), dtype=torch.bool), generator="constructed",
                      total_queries=len(probe_x))
    nulls = own_null_changes(net, probes, public_x, public_y, pairs=4, seed=0)
    assert len(nulls) == 4 and all(not m.isnan().any() for m in nulls)
