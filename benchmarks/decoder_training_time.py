"""Wall time of training the learned prior's decoder (issue 16 budget: ≤ 10 min on 2 CPU cores for ConvNet-16 on
the 12,000 public CIFAR-10 images), in a fresh cache folder so that nothing is reused; prints one JSON line with
the wall time, the process's CPU time (all threads: what the work costs when the machine is shared) and the
load average before and after.

    python benchmarks/decoder_training_time.py --case convnet16-60 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from decoder_prior import public_rows
from suite import _base
from suite_cases import CASES
from unlearnleak.attacks.feature_recovery.decoder import DecoderConfig, cached_decoder
from unlearnleak.models import build_model, load_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", default="convnet16-60")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decoder", default="{}", help="DecoderConfig fields as JSON (default: the defaults)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    case = CASES.get(args.case)
    stage, _ = _base(case, "cpu")
    spec = stage.spec
    data = public_rows(case)
    model = build_model(spec)
    load_weights(model, stage.state)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as cache:
        started, cpu = time.perf_counter(), time.process_time()
        _, info = cached_decoder(model.eval(), spec, stage.state, data, DecoderConfig(**json.loads(args.decoder)),
                                 cache_dir=cache)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"case": args.case, "images": len(data), "threads": args.threads, "seconds": round(seconds, 1),
                      "cpu_seconds": round(cpu, 1),
                      "cache": info["cache"], "config": info["config"], "load_before": load_before,
                      "load_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
