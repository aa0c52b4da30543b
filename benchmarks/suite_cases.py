"""The benchmark suite's cases (registered): model, dataset, θ0 recipe, split, and which settings run.

A case's θ0 is pretrained once on the public rows of its dataset (rows ≥ ``holdout``) and cached by config
hash (``unlearnleak.scenario.pretrained_base``). The recipes are cut for a 2-core CPU; the θ0 accuracy each
reaches is measured by ``python benchmarks/suite.py --pretrain-only`` and recorded in benchmarks/README.md.

SPLIT (fixed; shared with the inversion-engine work — do not move cases between halves):
TUNING = ConvNet θ0 after one epoch, LeNet, CNN without BN (random θ0), tabular rows; added later (the race's
decisions needed a trained network with normalisation layers on the tuning side too): an all-convolutional
BN-SiLU CNN, a pre-activation ResNet with BN and a CIFAR ResNet-20 with BN (``suite_models.py``, tuning only).
HELD-OUT = ConvNet θ0 ~60 %, ResNet-18 narrow, MLP, CIFAR-100, RetinaMNIST, BN/GELU CNN with tanh head;
added with issue 16 (architectures in ``suite_models.py``, never used for tuning): a VGG-style CNN with batch
norm, a ResNet-style CNN with GroupNorm, and the paper-scale ConvNet (width 64, θ0 after one epoch of the
official pretraining recipe); added later, after the race's rules were chosen: a MobileNet-style CNN with batch
norm and a ConvNeXt-style CNN with LayerNorm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import suite_models  # noqa: F401  (registers the suite's own architectures)
from unlearnleak.registry import Registry
from unlearnleak.scenario import ScenarioConfig
from unlearnleak.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("UNLEARNLEAK_DATA_DIR", REPO.parent / "shared" / "data"))
if not (DATA_DIR / "cifar-10-batches-py").is_dir() and Path("/work/shared/data").is_dir():
    DATA_DIR = Path("/work/shared/data")  # a git worktree sits one level deeper than the main checkout

Split = Literal["tune", "heldout", "gpu"]  # "gpu" cases run only when named (--case), never in --split all
Method = Literal["approx", "exact"]


@dataclass(frozen=True)
class Setting:
    """One unlearning setting: approximate (gradient ascent) or exact (retrain), k deleted of N fine-tuned."""

    method: Method
    k: int
    n: int

    @property
    def name(self) -> str:
        return f"{self.method}-k{self.k}-N{self.n}"


CORE = (Setting("approx", 1, 32), Setting("exact", 1, 32))
# The two ConvNet cases also carry k = 4 and N = 8 (sparse cover of method × k × N; see benchmarks/README.md).
WIDE = (*CORE, Setting("approx", 4, 32), Setting("exact", 1, 8), Setting("approx", 1, 8), Setting("exact", 4, 8))


@dataclass(frozen=True)
class Case:
    """A suite case: the scenario (dataset, model, θ0 recipe) and the settings it runs."""

    name: str
    split: Split
    dataset: str
    model: str
    model_kwargs: dict[str, Any]
    holdout: int
    pretrain: TrainConfig
    settings: tuple[Setting, ...] = CORE
    kind: Literal["image", "tabular"] = "image"
    note: str = ""
    dataset_options: dict[str, Any] = field(default_factory=dict)
    test_split: str = "test"

    def config(self, *, n_train: int = 32, device: str = "cpu") -> ScenarioConfig:
        """The scenario config (its θ0 part is the cache key, so it must not depend on the setting)."""
        return ScenarioConfig(dataset=self.dataset, data_dir=str(DATA_DIR), dataset_options=self.dataset_options,
                              test_split=self.test_split, model=self.model, model_kwargs=self.model_kwargs,
                              holdout=self.holdout, pretrain=self.pretrain, n_train=n_train, device=device)


CASES: Registry[Case] = Registry("suite case")


def _sgd(epochs: int, lr: float = 0.05, batch: int = 64, milestones: tuple[int, ...] = ()) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=lr, momentum=0.9, weight_decay=5e-4, batch_size=batch, drop_last=True,
                       milestones=milestones)


def _add(case: Case) -> None:
    CASES.register(case.name)(case)


# --- tuning half -------------------------------------------------------------------------------------------
_add(Case("convnet16-1ep", "tune", "cifar10", "convnet", {"width": 16}, 16000, _sgd(1), WIDE,
          note="ConvNet w16, θ0 after one epoch on 4,000 public CIFAR-10 images (the official code's θ0)"))
_add(Case("lenet", "tune", "cifar10", "lenet", {}, 12000, _sgd(4),
          note="LeNet (DLG/iDLG), θ0 4 epochs on 8,000 public CIFAR-10 images"))
_add(Case("cnn-nobn-random", "tune", "cifar10", "cnn_nobn", {"width": 16}, 16000, _sgd(0),
          note="3-layer LeakyReLU CNN without BN, random θ0 (no pretraining)"))
_add(Case("allconv-bn-silu", "tune", "cifar10", "allconv_bn_silu", {"width": 16}, 12000, _sgd(3, milestones=(2,)),
          note="all-convolutional CNN with BN and SiLU (strided convs, global pool), θ0 3 epochs on 8,000 images"))
_add(Case("preact-resnet-bn", "tune", "cifar10", "preact_resnet_bn", {"width": 16}, 12000, _sgd(3, milestones=(2,)),
          note="pre-activation ResNet with BN and ReLU (one block per stage), θ0 3 epochs on 8,000 images"))
_add(Case("resnet20-w8", "tune", "cifar10", "cifar_resnet_bn", {"width": 8, "blocks": 3}, 12000,
          _sgd(3, milestones=(2,)),
          note="He et al.'s CIFAR ResNet-20 (BN, ReLU, option-A shortcuts), widths 8-32, θ0 3 epochs on 8,000 images"))
# θ0 only 3 epochs: a θ0 fitted for 60 epochs (99 % test accuracy) saturates its softmax on most rows, so their
# gradient is exactly zero in float32 and there is nothing to recover (measured: 2 of 8 cells failed).
_add(Case("tabular-mlp", "tune", "breast_cancer", "mlp", {"hidden": [64]}, 100, _sgd(3, lr=0.01, batch=32),
          kind="tabular", note="MLP (one hidden layer of 64) on breast-cancer rows, θ0 3 epochs on 356 rows"))
# --- held-out half -----------------------------------------------------------------------------------------
_add(Case("convnet16-60", "heldout", "cifar10", "convnet", {"width": 16}, 8000, _sgd(3, milestones=(2,)), WIDE,
          note="ConvNet w16, θ0 3 epochs on 12,000 public CIFAR-10 images (aimed at ~60 %, measured 0.340)"))
_add(Case("resnet18-w8", "heldout", "cifar10", "resnet18", {"width": 8}, 16000, _sgd(2),
          note="ResNet-18 at width 8 (CPU), θ0 2 epochs on 4,000 public CIFAR-10 images"))
_add(Case("mlp-cifar10", "heldout", "cifar10", "mlp", {"hidden": [256, 128]}, 12000, _sgd(4, lr=0.02),
          note="MLP 3072-256-128-10 on CIFAR-10 images, θ0 4 epochs on 8,000 public images"))
_add(Case("cifar100-convnet16", "heldout", "cifar100", "convnet", {"width": 16}, 4000, _sgd(2),
          note="ConvNet w16 on CIFAR-100 (100 classes), θ0 2 epochs on 6,000 public images"))
_add(Case("retinamnist-convnet16", "heldout", "retinamnist", "convnet", {"width": 16}, 300,
          _sgd(6, lr=0.02, batch=32),
          note="ConvNet w16 on RetinaMNIST (28×28 fundus, 5 grades), θ0 6 epochs on 780 public images"))
_add(Case("bn-gelu-tanh", "heldout", "cifar10", "cnn_bn_gelu", {"width": 16, "hidden": 64}, 16000, _sgd(2),
          note="CNN with BN, GELU and a tanh hidden head, θ0 2 epochs on 4,000 public CIFAR-10 images"))

_add(Case("vgg-bn", "heldout", "cifar10", "vgg_bn", {"width": 16, "hidden": 128}, 12000, _sgd(3, milestones=(2,)),
          note="VGG-style CNN (conv-BN-ReLU ×2 per stage, 3 stages, 2-layer head), θ0 3 epochs on 8,000 public images"))
_add(Case("resnet-gn", "heldout", "cifar10", "resnet_gn", {"width": 16, "groups": 4}, 12000,
          _sgd(3, milestones=(2,)),
          note="ResNet-style CNN with GroupNorm (4 groups) and SiLU, θ0 3 epochs on 8,000 public images"))
# Added after the race's rules of issue 16 were chosen (last on the tuning half: the agreement gate), so that no
# rule measured on the held-out half above has seen them: a depthwise-separable BN network and a LayerNorm one.
_add(Case("mobilenet-bn", "heldout", "cifar10", "mobilenet_bn", {"width": 16}, 12000, _sgd(3, milestones=(2,)),
          note="MobileNet-style CNN (depthwise-separable conv-BN-ReLU6 blocks), θ0 3 epochs on 8,000 public images"))
_add(Case("convnext-ln", "heldout", "cifar10", "convnext_ln", {"width": 16}, 12000, _sgd(3, milestones=(2,)),
          note="ConvNeXt-style CNN (7×7 depthwise, LayerNorm, GELU, residual), θ0 3 epochs on 8,000 public images"))
# The paper-scale case (issue 16): the official ConvNet width 64, θ0 after ONE epoch of the official pretraining
# recipe (docs/paper.md §5: SGD without momentum, lr 0.1, wd 5e-4, batch 128, drop_last, crop + flip), on the 12,000
# public images of the shared subset; N = 32, k = 1, 8 photos, 1,000 iterations (`--iterations 1000`).
_add(Case("convnet64-paper", "heldout", "cifar10", "convnet", {"width": 64}, 8000,
          TrainConfig(epochs=1, lr=0.1, momentum=0.0, weight_decay=5e-4, batch_size=128, augment=True,
                      drop_last=True),
          note="the paper's ConvNet (width 64), θ0 one epoch of the official recipe on 12,000 public images"))

# --- GPU only (item 7): the paper's width, run with the paper's 10,000 × 5 budget; see benchmarks/README.md ----
_add(Case("convnet64-gpu", "gpu", "cifar10", "convnet", {"width": 64}, 8000,
          TrainConfig(epochs=30, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128, augment=True,
                      drop_last=True, milestones=(15, 25)),
          note="the paper's ConvNet (width 64), θ0 30 epochs on 12,000 public CIFAR-10 images; needs a GPU"))


def cases(split: str = "all", names: list[str] | None = None) -> list[Case]:
    """The registered cases of ``split`` ("tune", "heldout" or "all"), or the named ones."""
    if names:
        return [CASES.get(n) for n in names]
    return [CASES.get(n) for n in _ORDER if split == "all" or CASES.get(n).split == split]


def not_tuning(names: list[str]) -> str | None:
    """The error a tuning script prints when ``names`` include a case outside the tuning half (None: all tuning)."""
    bad = [n for n in names if n not in CASES or CASES.get(n).split != "tune"]
    if not bad:
        return None
    return (f"error: {bad}: not tuning cases of the suite; tune on the tuning half only "
            f"({sorted(n for n in CASES if CASES.get(n).split == 'tune')})")


_ORDER = ["convnet16-1ep", "lenet", "cnn-nobn-random", "tabular-mlp", "allconv-bn-silu", "preact-resnet-bn",
          "resnet20-w8", "convnet16-60", "resnet18-w8", "mlp-cifar10",
          "cifar100-convnet16", "retinamnist-convnet16", "bn-gelu-tanh", "vgg-bn", "resnet-gn", "mobilenet-bn",
          "convnext-ln", "convnet64-paper"]
