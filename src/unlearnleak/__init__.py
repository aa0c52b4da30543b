"""unlearnleak: measure how much machine unlearning leaks about the data it deletes.

Implements and extends Hu et al., "Learn What You Want to Unlearn: Unlearning Inversion
Attacks against Machine Unlearning" (IEEE S&P 2024).

The library's face (docs/architecture.md): load a pair, say what the server knows, run either attack, score
it, or run a whole experiment::

    import unlearnleak as ul
    pair, theta0 = ul.pair_from_files("my_model.py:Net", original="before.pt", unlearned="after.safetensors",
                                      input_shape=(3, 32, 32), num_classes=10)
    rec = ul.FeatureRecovery(iterations=200).attack(pair)
    images, labels = ul.read_ground_truth("deleted.safetensors")
    print(ul.evaluate_reconstruction(rec, images, labels)["mean"])

Names are imported when first used, so ``import unlearnleak`` (and the CLI's start) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # the pair and what the server knows
    "ModelPair": "unlearnleak.pair",
    "load_pair_folder": "unlearnleak.pair",
    "load_knowledge": "unlearnleak.pair",
    "ServerKnowledge": "unlearnleak.knowledge",
    "pair_from_files": "unlearnleak.audit",
    "read_ground_truth": "unlearnleak.audit",
    # black-box access
    "ModelOracle": "unlearnleak.oracle",
    "HttpOracle": "unlearnleak.oracle_http",
    # the two attacks and their scoring
    "FeatureRecovery": "unlearnleak.attacks.feature_recovery.facade",
    "FeatureRecoveryConfig": "unlearnleak.attacks.feature_recovery.config",
    "LabelInference": "unlearnleak.attacks.label_inference.facade",
    "LabelInferenceConfig": "unlearnleak.attacks.label_inference.config",
    "evaluate_reconstruction": "unlearnleak.attacks.feature_recovery",
    # whole runs
    "ScenarioConfig": "unlearnleak.scenario",
    "build_scenario": "unlearnleak.scenario",
    "ExperimentConfig": "unlearnleak.experiments.schema",
    "run_experiment": "unlearnleak.experiments.runner",
    "run_audit": "unlearnleak.audit",
}

__all__ = [  # written out, so linters and IDEs see the names; a test keeps it equal to _EXPORTS
    "ExperimentConfig",
    "FeatureRecovery",
    "FeatureRecoveryConfig",
    "HttpOracle",
    "LabelInference",
    "LabelInferenceConfig",
    "ModelOracle",
    "ModelPair",
    "ScenarioConfig",
    "ServerKnowledge",
    "__version__",
    "build_scenario",
    "evaluate_reconstruction",
    "load_knowledge",
    "load_pair_folder",
    "pair_from_files",
    "read_ground_truth",
    "run_audit",
    "run_experiment",
]

if TYPE_CHECKING:
    from unlearnleak.attacks.feature_recovery import evaluate_reconstruction
    from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
    from unlearnleak.attacks.feature_recovery.facade import FeatureRecovery
    from unlearnleak.attacks.label_inference.config import LabelInferenceConfig
    from unlearnleak.attacks.label_inference.facade import LabelInference
    from unlearnleak.audit import pair_from_files, read_ground_truth, run_audit
    from unlearnleak.experiments.runner import run_experiment
    from unlearnleak.experiments.schema import ExperimentConfig
    from unlearnleak.knowledge import ServerKnowledge
    from unlearnleak.oracle import ModelOracle
    from unlearnleak.oracle_http import HttpOracle
    from unlearnleak.pair import ModelPair, load_knowledge, load_pair_folder
    from unlearnleak.scenario import ScenarioConfig, build_scenario


def __getattr__(name: str) -> Any:
    """Import an exported name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unlearnleak' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
