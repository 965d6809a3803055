"""The networks of the task suite: the two the source papers train on MNIST, and two variants.

* :class:`ShallowCNN` — the 3-layer CNN of Zhu, Hayashi & Ohsawa §4 ("3 layers with 28938
  parameters"): conv 5×5 (16) → pool → conv 5×5 (32) → pool → linear 1568→10. The layer sizes
  are not printed in the paper; this is the architecture whose parameter count is exactly 28,938.
* :class:`MLP` — the fully-connected 784-100-200-10 network of Huang & Toyoizumi §V B, with the
  sigmoid units and quadratic error of the paper, or ReLU units for cross-entropy (their Fig. 7c).
* ``cnn-wide`` — the CNN with twice the channels (32 and 64; 83,466 parameters).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal, get_args

import torch
from torch import nn

Activation = Literal["sigmoid", "relu"]
#: the models the command lines, the environment and the evaluation name
ModelName = Literal["cnn", "cnn-wide", "mlp", "mlp-relu"]
MODEL_NAMES: tuple[ModelName, ...] = get_args(ModelName)


class ShallowCNN(nn.Module):
    """Zhu et al.'s shallow CNN for 1×28×28 inputs; returns logits. ``width`` multiplies the channels
    (``width=2``: the task suite's wider CNN, 32 and 64 channels).

    Example:
        >>> model = ShallowCNN()
        >>> count_parameters(model)
        28938
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 1) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4 (two 2×2 poolings), got {image_size}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        c1, c2 = 16 * width, 32 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(c2 * (image_size // 4) ** 2, num_classes)
        # oneDNN's NHWC convolutions are faster on CPU: a batch-32 training step took 10.4 ms
        # instead of 14.1 ms on one thread (6.7 vs 8.7 ms on two); .to(device) keeps the layout
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # flattened images
            side = int(x.shape[1] ** 0.5)
            x = x.view(-1, 1, side, side)
        return self.classifier(self.features(x).flatten(1))


class MLP(nn.Module):
    """Huang & Toyoizumi's 784-100-200-10 network.

    With ``activation="sigmoid"`` every layer, the output included, is sigmoid as in their Eq. (1),
    to be trained with the quadratic error :func:`quadratic_error`; with ``activation="relu"`` the
    hidden layers are ReLU and the output is raw logits for cross-entropy.
    """

    def __init__(
        self,
        sizes: tuple[int, ...] = (784, 100, 200, 10),
        activation: Activation = "sigmoid",
    ) -> None:
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least an input and an output size, got {sizes}")
        if activation not in ("sigmoid", "relu"):
            raise ValueError(f"activation must be 'sigmoid' or 'relu', got {activation!r}")
        self.activation = activation
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        hidden = torch.sigmoid if self.activation == "sigmoid" else torch.relu
        for layer in self.layers[:-1]:
            x = hidden(layer(x))
        out = self.layers[-1](x)
        return torch.sigmoid(out) if self.activation == "sigmoid" else out


def quadratic_error(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """E = ½‖y* − y‖² per example (R-SGD paper §III), averaged over the mini-batch; one-hot targets."""
    targets = nn.functional.one_hot(labels, outputs.shape[1]).to(outputs.dtype)
    return 0.5 * (targets - outputs).pow(2).sum(dim=1).mean()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(name: ModelName) -> nn.Module:
    """The models by the names the command lines use."""
    if name == "cnn":
        return ShallowCNN()
    if name == "cnn-wide":
        return ShallowCNN(width=2)
    if name == "mlp":
        return MLP(activation="sigmoid")
    if name == "mlp-relu":
        return MLP(activation="relu")
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def loss_function(name: ModelName) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss each model trains with: cross-entropy on logits, except the R-SGD paper's sigmoid
    MLP (``mlp``), which trains with its quadratic error."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return quadratic_error if name == "mlp" else nn.functional.cross_entropy
