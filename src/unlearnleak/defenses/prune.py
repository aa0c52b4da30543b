"""Magnitude pruning of θ_u before release (docs/paper.md §7, "S3"), with torch.nn.utils.prune made permanent.

The weights of every Conv and Linear layer are pruned by |w| (L1 unstructured), either with one global
threshold across layers (``scope="global"``) or at the same sparsity in each layer (``scope="layer"``).
Biases are kept.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn.utils import prune

from unlearnleak.defenses.base import DefenseContext, StateDict, register_defense
from unlearnleak.unlearning import state_of

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class PruneParams(BaseModel):
    """The share of prunable weights set to zero, and global or per-layer thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sparsity: float = Field(0.0, ge=0, lt=1)
    scope: Literal["global", "layer"] = "global"


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(layer, "weight") for every Conv/Linear layer of ``model``."""
    return [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]


@register_defense("prune", PruneParams, strength="sparsity")
def magnitude_prune(state: StateDict, context: DefenseContext, params: PruneParams) -> StateDict:
    """Zero the smallest-magnitude weights; the pruning masks are folded into the weights (prune.remove)."""
    if params.sparsity == 0:
        return state
    model = context.model(state)
    targets = prunable(model)
    if params.scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=params.sparsity)
    else:
        for module, name in targets:
            prune.l1_unstructured(module, name, amount=params.sparsity)
    for module, name in targets:
        prune.remove(module, name)
    return state_of(model)
