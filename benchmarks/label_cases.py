"""The label-inference benchmarks' cases: θ0 recipe and architecture, and which half each belongs to.

Every case fine-tunes θ on D_ft = 500 rows of its private pool the paper's way (1 epoch, SGD lr 1e-3, batch
128, BN frozen) and unlearns from it; the θ0 recipes are cached by config hash (shared with the other
benchmarks where named).

SPLIT (fixed before any result of issue 18 was seen):
- tuning cases — ``lenet`` (no BN; the setting of issue 8's calibration) and ``convnet16`` (the paper's
  ConvNet with batch norm at width 16; the suite's ``convnet16-60`` θ0, 3 epochs on 12,000 images, which is
  also the θ0 of ``label_inference_pu --quick``): their even null seeds and deletions of classes 0–4 form the
  tuning half, their odd null seeds and classes 5–9 go to the held-out half;
- held-out cases, every pair held out — two other batch-norm architectures: ``bn_gelu`` (conv-BN-GELU ×3
  and a tanh hidden head; the suite's ``bn-gelu-tanh`` θ0) and ``resnet18_w8`` (ResNet-18 at width 8; the
  suite's ``resnet18-w8`` θ0).
(The benchmarks' 10-epoch ConvNet θ0 was the first choice for ``convnet16``; its pretraining did not fit the
shared CPU of the session.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common import BENCH_PRETRAIN, bench_config
from suite_cases import CASES
from unlearnleak.scenario import ForgetConfig, ScenarioConfig, UnlearningConfig
from unlearnleak.training import TrainConfig

FINETUNE = TrainConfig(epochs=1, lr=1e-3, batch_size=128, freeze_bn=True)  # the paper's fine-tune
N_TRAIN = 500


@dataclass(frozen=True)
class LabelCase:
    """One model of the label benchmarks: its scenario config and its half."""

    name: str
    split: Literal["tune", "heldout"]
    note: str

    def config(self, *, n_train: int = N_TRAIN, device: str = "cpu") -> ScenarioConfig:
        """The scenario: θ0 (cached), θ fine-tuned on ``n_train`` private rows; forget/unlearning are
        placeholders (the benchmarks unlearn through ``unlearning.unlearn`` themselves)."""
        common = {"forget": ForgetConfig(kind="class", class_id=0, fraction=1.0),
                  "unlearning": UnlearningConfig(method="gradient_ascent", params={"lr": 1e-3}),
                  "finetune": FINETUNE}
        if self.name == "lenet":
            cfg = bench_config(width=16, n_train=n_train, device=device, **common)
            return cfg.model_copy(update={"model": "lenet", "model_kwargs": {}, "pretrain": BENCH_PRETRAIN.model_copy(
                update={"epochs": 4, "milestones": ()})})
        suite = {"convnet16": "convnet16-60", "bn_gelu": "bn-gelu-tanh", "resnet18_w8": "resnet18-w8"}[self.name]
        return CASES.get(suite).config(n_train=n_train, device=device).model_copy(update=common)


LABEL_CASES = {c.name: c for c in (
    LabelCase("lenet", "tune", "LeNet (no BN), θ0 4 epochs on CIFAR-10 batches 2–5"),
    LabelCase("convnet16", "tune", "ConvNet-16 with BN, θ0 3 epochs on 12,000 images (= the θ0 of "
                                   "label_inference_pu --quick)"),
    LabelCase("bn_gelu", "heldout", "CNN with BN, GELU and a tanh head, θ0 2 epochs on 4,000 images"),
    LabelCase("resnet18_w8", "heldout", "ResNet-18 at width 8 (BN), θ0 2 epochs on 4,000 images"),
)}
