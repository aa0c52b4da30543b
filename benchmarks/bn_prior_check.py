"""Does DeepInversion's batch-norm prior prefer the deleted photo to noise when one photo is inverted (k = 1)?

The ``bn_prior`` (``priors.BatchNormStatistics``) scores how far an input's per-channel feature statistics at
each batch-norm layer lie from the layer's running statistics. GradInversion (Yin et al., CVPR 2021) used it for
batches of dozens of images; with one image the statistics are those of its own pixels. Per photo of a case's
private pool, on θ0 of the case, the prior's value (lower = more like the training data) for the photo, uniform
noise, the photo's own mean colour and its 4×4 thumbnail; then the share of photos that beat noise. No attack is
run; nothing is tuned.

    python benchmarks/bn_prior_check.py --cases allconv-bn-silu,preact-resnet-bn,resnet20-w8 --samples 8
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

import suite
from suite_cases import CASES, Setting
from unlearnleak.attacks.feature_recovery import target_gradient
from unlearnleak.attacks.feature_recovery.priors import BatchNormStatistics
from unlearnleak.metrics.baselines import own_mean_colour, thumbnail_4x4


def prior_value(model: torch.nn.Module, x: torch.Tensor) -> float:
    """The bn_prior penalty (weight 1) of one batch of inputs."""
    prior = BatchNormStatistics(1.0)
    with torch.no_grad(), prior.hooks(model):
        model(x)
    return float(prior.penalty(x))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="allconv-bn-silu,preact-resnet-bn,resnet20-w8")
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| case | photos | photo | uniform noise | own mean colour | 4×4 thumbnail | photo below noise |")
    print("|---|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        values: dict[str, list[float]] = {"photo": [], "noise": [], "mean": [], "thumb": []}
        for sample in range(args.samples):
            pair, knowledge, truth, _, _ = suite.build_pair(CASES.get(name), Setting("approx", 1, 32), sample, "cpu")
            model = pair.model(target_gradient(pair, knowledge, "approximate").invert_on, "cpu", knowledge)
            noise = torch.rand(truth.shape, generator=torch.Generator().manual_seed(sample))
            for key, x in (("photo", truth), ("noise", noise), ("mean", own_mean_colour(truth)),
                           ("thumb", thumbnail_4x4(truth))):
                values[key].append(prior_value(model, x))
        wins = sum(p < n for p, n in zip(values["photo"], values["noise"], strict=True))
        print(f"| {name} | {args.samples} | " + " | ".join(f"{statistics.fmean(v):.1f}" for v in values.values())
              + f" | {wins} of {args.samples} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
