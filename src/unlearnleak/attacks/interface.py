"""Both attacks' facades and configs under one import (each is defined beside its attack).

In the spirit of breaching's ``reconstruct(payload, knowledge)``, each attack states its threat model in its
signature: ``FeatureRecovery(config).attack(pair, knowledge)`` (the white-box server,
``attacks/feature_recovery/facade.py``) and ``LabelInference(config).attack(original_oracle, unlearned_oracle)``
(the black-box user, ``attacks/label_inference/facade.py``).
"""

from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig, LearnedPriorSpec
from unlearnleak.attacks.feature_recovery.facade import FeatureRecovery
from unlearnleak.attacks.label_inference.config import LabelInferenceConfig
from unlearnleak.attacks.label_inference.facade import LabelInference, LabelInferenceResult

__all__ = ["FeatureRecovery", "FeatureRecoveryConfig", "LabelInference", "LabelInferenceConfig",
           "LabelInferenceResult", "LearnedPriorSpec"]
