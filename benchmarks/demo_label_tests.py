"""The demo's label inference under each gap test: is the deleted class detected, not only ranked first?

Builds the pair of `unlearnleak demo` (digits, LeNet, half of class 3 deleted by gradient ascent), makes the
demo's nes probes (5 per class, the same seed), and prints, for every test (``student`` — the default —,
``robust``, ``lower``), the ranking, the gap statistic T, the calibrated threshold and the verdict. The
tests' false-detection rates on held-out null pairs are in ``label_calibration.py`` (docs/label_inference.md).

    python benchmarks/demo_label_tests.py [--seed 0]
"""

from __future__ import annotations

import argparse
import json

import torch

from unlearnleak.attacks.label_inference import DecisionConfig, generate_probes, infer_label
from unlearnleak.attacks.label_inference.calibration import TESTS
from unlearnleak.commands.demo import label_inference_config
from unlearnleak.oracle import ModelOracle
from unlearnleak.scenario import build_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scn = build_scenario(label_inference_config(args.seed, "cpu"))
    original = ModelOracle.from_pair(scn.pair, "original")
    unlearned = ModelOracle.from_pair(scn.pair, "unlearned")
    probes = generate_probes("nes", original, num_classes=scn.pair.spec.num_classes, per_class=5,
                             input_shape=scn.pair.spec.input_shape, seed=args.seed)
    deleted = int(scn.forget_y[0])
    rows = []
    for test in TESTS:
        guess = infer_label(original, unlearned, probes, config=DecisionConfig(test=test))
        rows.append({"test": test, "deleted": deleted, "best": guess.best, "detected": guess.detected,
                     "T": guess.gap, "threshold": guess.z, "p_value": guess.p_value,
                     "calibration": guess.calibration,
                     "top4": [[c, float(guess.changes[c])] for c in guess.ranked[:4]]})
        print(f"{test:8s} deleted {deleted}, ranked first {guess.best}, detected {guess.detected}: "
              f"T = {guess.gap:.2f} vs threshold {guess.z:.2f} (p = {guess.p_value:.3f}, {guess.calibration})")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
