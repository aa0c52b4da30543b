"""Benchmark-only presets: the default with one option changed, so the suite measures a rule before (or instead of)
adopting it, through the same pipeline and row keys (``suite.py --presets NAME``)."""

from __future__ import annotations

from unlearnleak.attacks.feature_recovery import PRESETS

# The consensus (race_consensus 0.5): where the agreement gate does not fire, half the winner's final image and half
# the mean of the other recipes' scored images. Measured and not adopted (benchmarks/README.md, "The consensus").
PRESETS.register("best-consensus")(PRESETS.get("best").with_overrides(race_consensus=0.5))

# A wider pick tolerance (race_tolerance 1.0): the smoothest candidate within 2x the lowest held-out cost (issue 16;
# benchmarks/README.md, "A wider pick tolerance").
PRESETS.register("best-tol1")(PRESETS.get("best").with_overrides(race_tolerance=1.0))

# The agreement tie-break (race_pick "agreement", race_tolerance 1.0): among the candidates within 2x the lowest
# held-out cost, the image that agrees most with the other candidates' scored images (issue 16; benchmarks/README.md,
# "The agreement tie-break").
PRESETS.register("best-agree1")(PRESETS.get("best").with_overrides(race_tolerance=1.0, race_pick="agreement"))
