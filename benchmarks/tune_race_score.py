"""Which score of a truncated race leg ranks the recipes as the final PSNR does? TUNING cases only (issue 16).

Per (case, approximate, sample), each recipe runs the first L steps of its own schedule for S = T − 2·L steps on
the race's half of ∇* (seed = sample for every recipe, as the race draws them), then: the held-out cost and TV
of the leg's last iterate as it is, and after cool-down probes of C steps (the leg's learning rate decayed to 0,
on a copy, with the optimiser's state), and the PSNR of the leg, of the probes, and of the leg continued on all
of ∇* to S (evaluation only). One JSON line per cell (``results/tune_race_score_L*.log``).

    python benchmarks/tune_race_score.py 100 20,50 cnn-nobn-random,lenet 0,1,2,3     # L, C list, cases, samples
"""

import json
import sys

import torch

import suite
from suite_cases import CASES, Setting
from unlearnleak.attacks.feature_recovery import preset, target_gradient
from unlearnleak.attacks.feature_recovery.adaptive import holdout_mask
from unlearnleak.attacks.feature_recovery.inversion import (
    GradientMatcher,
    InversionConfig,
    learning_rate,
    run_inversion,
)
from unlearnleak.attacks.feature_recovery.priors import total_variation
from unlearnleak.metrics import psnr

torch.set_num_threads(1)
T, L = 1000, int(sys.argv[1])
COOLS = [int(c) for c in sys.argv[2].split(",")]
S = T - 2 * L
for sample in [int(s) for s in sys.argv[4].split(",")]:
    for case_name in sys.argv[3].split(","):
        if CASES.get(case_name).split != "tune":
            sys.exit(f"error: {case_name} is not a tuning case")
        pair, knowledge, tx, ty, _ = suite.build_pair(CASES.get(case_name), Setting("approx", 1, 32), sample, "cpu")
        target = target_gradient(pair, knowledge, "approximate")
        model = pair.model(target.invert_on, "cpu", knowledge)
        shape = tuple(pair.spec.input_shape)
        fit = holdout_mask(model, target, 0.5, sample)
        held = GradientMatcher(model, target, ty, InversionConfig(cost="cosine"), mask=1 - fit, input_shape=shape)
        out = {}
        for name in ("paper", "modern", "smooth"):
            cfg = preset(name, iterations=S, restarts=1, keep_best=False, prune_at=())
            leg = run_inversion(model, target, ty, shape, cfg, seed=sample, log_every=0, mask=fit,
                                feature_phase=False, stop_step=L)
            xs = {"last": leg.candidates}
            lr_l = learning_rate(cfg, L, S)
            pc = {}
            for c in [c for c in COOLS if c > 0]:
                cool = run_inversion(model, target, ty, shape,
                                     cfg.with_overrides(iterations=c, lr=lr_l, schedule="cosine", warmup=0.0),
                                     log_every=0, mask=fit, feature_phase=False, init=leg.candidates,
                                     optimizer_state=leg.optimizer_state)
                xs[f"cool{c}"] = cool.candidates
                pc[c] = float(psnr(cool.candidates[0], tx).mean())
            with held.hooks():
                sc = {k: float(held.score(v, full=False)[0]) for k, v in xs.items()}
            tv = {k: float(total_variation(v[0])) for k, v in xs.items()}
            cont = run_inversion(model, target, ty, shape, cfg.with_overrides(keep_best=True), log_every=0,
                                 feature_phase=False, init=leg.candidates, optimizer_state=leg.optimizer_state,
                                 start_step=L)
            out[name] = {"score": sc, "tv": tv, "psnr_final": float(psnr(cont.x, tx).mean()),
                         "psnr_cool": pc, "psnr_leg": float(psnr(leg.candidates[0], tx).mean())}
        print(json.dumps({"case": case_name, "sample": sample, "L": L, "C": COOLS, "out": out}), flush=True)
