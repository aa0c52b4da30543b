"""Defenses applied to θ_u before release (noise, pruning, fine-tuning); one module each, one registry."""

from unlearnleak.defenses import finetune, noise, prune  # noqa: F401  (registers the defenses)
from unlearnleak.defenses.base import DEFENSES, Defense, DefenseContext, defend, defense_params, register_defense

__all__ = ["DEFENSES", "Defense", "DefenseContext", "defend", "defense_params", "register_defense"]
