"""A model definition as a user of `unlearnleak audit` has one: plain PyTorch, nothing from unlearnleak.

`unlearnleak audit --model-def examples/my_model.py:Net` imports this file (the only code the audit runs) to
rebuild the architecture that the checkpoints were saved from.
"""

import torch
from torch import nn


class Net(nn.Module):
    """A small CNN for 32×32 RGB images in [0, 1]: three 5×5 convolutions (two of stride 2) with ReLU, one
    linear layer — the shape of the LeNet variants the gradient-inversion literature attacks."""

    def __init__(self, num_classes: int = 10, width: int = 12) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 5, padding=2, stride=2), nn.ReLU(),
            nn.Conv2d(width, width, 5, padding=2, stride=2), nn.ReLU(),
            nn.Conv2d(width, width, 5, padding=2, stride=1), nn.ReLU(),
        )
        self.classifier = nn.Linear(width * 8 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
