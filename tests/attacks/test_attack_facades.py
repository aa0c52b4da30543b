"""One config and one facade per attack: the library's objects take everything the pipeline and the commands
use (every generator, level, calibration, test), and an experiment section is the same config."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import unlearnleak as ul
from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.attacks.label_inference.config import LabelInferenceConfig
from unlearnleak.errors import ConfigError
from unlearnleak.experiments.pipeline import infer_and_evaluate
from unlearnleak.experiments.schema import AttacksConfig, ExperimentConfig, load_experiment
from unlearnleak.models import Normalized
from unlearnleak.oracle import ModelOracle

SHAPE = (3, 8, 8)
K = 4
DELETED = 2


def linear_model(scale: float = 3.0) -> Normalized:
    """A linear classifier on 8×8 RGB images that can be pushed past p_c = 0.9995 within [0, 1]."""
    torch.manual_seed(0)
    linear = nn.Linear(3 * 8 * 8, K)
    with torch.no_grad():
        linear.weight.mul_(scale)
    return Normalized(nn.Sequential(nn.Flatten(), linear), (0.5,) * 3, (0.25,) * 3, image=True).eval()


def unlearned_of(model: Normalized) -> Normalized:
    """θ_u: θ with class DELETED's logit lowered (its confidence falls on its own probes)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.net[1].bias[DELETED] -= 2.0  # type: ignore[index, union-attr, operator]
    return out


class Public:
    """Held-out real data for the public generator: random images labelled as θ predicts them."""

    def __init__(self, model: nn.Module) -> None:
        self.x = torch.rand(400, *SHAPE, generator=torch.Generator().manual_seed(1))
        self.y = oracle(model).predict_proba(self.x).argmax(1)


def oracle(model: nn.Module) -> ModelOracle:
    return ModelOracle(model, num_classes=K, input_shape=SHAPE)


def test_each_attack_has_one_config_shared_by_the_library_and_the_experiment_config() -> None:
    sections = AttacksConfig.model_fields
    assert sections["feature_recovery"].annotation == FeatureRecoveryConfig | None
    assert sections["label_inference"].annotation == LabelInferenceConfig | None
    assert ul.FeatureRecoveryConfig is FeatureRecoveryConfig and ul.LabelInferenceConfig is LabelInferenceConfig
    # one set of defaults: the library object, an experiment section and the commands all start from these
    assert ul.LabelInference().config == LabelInferenceConfig() == LabelInferenceConfig.model_validate({})
    li = LabelInferenceConfig()
    assert (li.generator, li.per_class, li.level, li.calibration, li.test, li.statistic, li.min_per_class) == \
        ("nes", 10, 0.05, "auto", "student", "log_odds", 3)
    fr = ul.FeatureRecovery().config
    assert (fr.preset, fr.iterations, fr.mode, fr.learned_prior) == ("best", None, "auto", None)


def test_the_library_label_inference_takes_every_generator_level_calibration_and_test() -> None:
    model = linear_model()
    unlearned = unlearned_of(model)
    settings = {"per_class": 3, "level": 0.01, "calibration": "gaussian", "test": "robust",
                "statistic": "probability"}
    public = ul.LabelInference(generator="public", params={"min_confidence": 0.6}, **settings)
    result = public.attack(oracle(model), oracle(unlearned), public=Public(model))
    g = result.guess
    assert result.partial is None and g is not None and result.probes is not None
    assert (g.generator, g.level, g.calibration, g.test, g.statistic) == ("public", 0.01, "gaussian", "robust",
                                                                          "probability")
    assert g.ranked[0] == DELETED
    white = ul.LabelInference(generator="gradient", **settings).attack(oracle(model), oracle(unlearned),
                                                                       white_box=model)
    assert white.guess is not None and white.probes is not None and not white.probes.black_box
    assert white.guess.ranked[0] == DELETED
    with pytest.raises(ConfigError, match="public="):
        ul.LabelInference(generator="public").attack(oracle(model), oracle(unlearned))
    with pytest.raises(ConfigError, match="white-box"):
        ul.LabelInference(generator="gradient").attack(oracle(model), oracle(unlearned))


def test_the_pipeline_stage_gives_what_the_library_object_gives() -> None:
    model = linear_model()
    unlearned = unlearned_of(model)
    config = LabelInferenceConfig(generator="public", per_class=3, level=0.1, calibration="student_t",
                                  params={"min_confidence": 0.6}, seed=4)
    data = Public(model)
    ev = infer_and_evaluate(oracle(model), oracle(unlearned), config, [DELETED], public=data)
    direct = ul.LabelInference(config).attack(oracle(model), oracle(unlearned), public=data).guess
    assert direct is not None
    assert ev.guess == direct and ev.guess.level == 0.1 and ev.guess.calibration == "student_t"
    assert ev.correct is True and ev.deleted_rank == 1


def test_settings_are_checked_by_the_config_itself() -> None:
    with pytest.raises(ValidationError, match="threshold"):
        LabelInferenceConfig(generator="nes", params={"threshold": 2})
    with pytest.raises(ValidationError, match="not a parameter of the zoo generator"):
        LabelInferenceConfig(generator="zoo", params={"colour": 1})
    with pytest.raises(ValidationError, match="unknown probe generator"):
        LabelInferenceConfig(generator="nope")
    with pytest.raises(ValidationError, match="colour: not an inversion setting"):
        FeatureRecoveryConfig(overrides={"colour": 3})
    with pytest.raises(ValidationError, match="lr"):
        FeatureRecoveryConfig(preset="paper", overrides={"lr": -1})
    with pytest.raises(ValidationError, match="not inside preset=paper"):
        FeatureRecoveryConfig(preset="paper", learned_prior={"public_data": "cifar10"})


def test_run_settings_come_from_the_experiment_and_stay_out_of_dumps() -> None:
    config = FeatureRecoveryConfig(iterations=3, seed=5, device="cuda", k=2)
    assert "seed" not in config.model_dump() and "k" not in config.model_dump()
    assert repr(ul.FeatureRecovery(config)).startswith("FeatureRecovery(preset='best', iterations=3")
    assert "seed=5" in repr(ul.FeatureRecovery(config))
    for key in ("attacks.feature_recovery.seed=3", "attacks.feature_recovery.k=2",
                "attacks.label_inference.device=cuda"):
        sets = ["attacks.label_inference.generator=nes", key]
        with pytest.raises(ConfigError, match="is set by the experiment"):
            load_experiment(None, sets=sets)
    with pytest.raises(ValidationError, match="is set by the experiment"):
        ExperimentConfig(attacks=AttacksConfig(label_inference=LabelInferenceConfig(seed=1)))
