"""Probes built by hand for the decision and calibration tests: every probe sure of its class, one pixel each."""

from __future__ import annotations

import torch

from unlearnleak.attacks.label_inference import ProbeSet

K = 10
SHAPE = (1, 2, 2)


def constructed_probes(per_class: int) -> ProbeSet:
    """Probes at p_c = 0.9995 (the zoo threshold), `per_class` per class; one pixel identifies each probe."""
    m = K * per_class
    target = torch.arange(K).repeat(per_class)
    own = torch.full((m,), 0.9995, dtype=torch.float64)
    proba = ((1 - own) / (K - 1))[:, None].repeat(1, K)
    proba[torch.arange(m), target] = own
    x = torch.zeros(m, *SHAPE)
    x[:, 0, 0, 0] = torch.arange(m, dtype=torch.float32)
    return ProbeSet(x=x, target=target, original_proba=proba, queries=torch.ones(m, dtype=torch.long),
                    accepted=torch.ones(m, dtype=torch.bool), generator="constructed", total_queries=m)
