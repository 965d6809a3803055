"""Dataset containers and minibatches: :class:`Split`, :class:`ImageData`, :func:`iterate_batches`.

Images are held as uint8 tensors (all of MNIST is 55 MB) and turned into float network input only
when asked, so a whole dataset can be moved to a device once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

PIXEL_MAX = 255
"""Largest uint8 pixel value; :meth:`Split.float_images` divides by it."""


class DataError(RuntimeError):
    """A data file is missing, corrupt or not what it claims to be, or a task does not fit its data.

    The message names the file (or the numbers) and says what to do about it, because the user usually
    has to act (delete a cache, place files, run pip by hand, choose smaller sizes).
    """


@dataclass(frozen=True, eq=False)
class Split:
    """One split of an image-classification dataset, kept compact as uint8 pixels.

    Images stay uint8 so that all of MNIST fits in 55 MB and can be moved to a device once;
    :meth:`float_images` produces the network input. ``eq=False`` because element-wise tensor
    comparison has no single truth value; compare the tensors explicitly.

    Attributes:
        images: uint8, shape (N, H, W) — (N, 28, 28) for MNIST.
        labels: int64, shape (N,).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 3:
            raise ValueError(
                f"Split.images must be uint8 of shape (N, H, W), got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(
                f"Split.labels must be int64 of shape (N,), got {self.labels.dtype} "
                f"of shape {tuple(self.labels.shape)}"
            )
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"Split has {self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def float_images(self, *, flatten: bool = False) -> torch.Tensor:
        """Pixels as float32 in [0, 1]: (N, 1, H, W) for a CNN, or (N, H*W) for an MLP if ``flatten``."""
        scaled = self.images.to(torch.float32).div_(PIXEL_MAX)
        if flatten:
            return scaled.reshape(len(self), self.images.shape[1] * self.images.shape[2])
        return scaled.unsqueeze(1)

    def subset(self, n: int, *, seed: int) -> Split:
        """``n`` examples drawn without replacement, reproducibly from ``seed``.

        The permutation is drawn on the CPU so the same seed gives the same subset on any device.
        """
        if not 0 <= n <= len(self):
            raise ValueError(f"cannot draw a subset of {n} examples from a split of {len(self)}")
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=generator)[:n]
        return Split(
            images=self.images[index.to(self.images.device)],
            labels=self.labels[index.to(self.labels.device)],
        )

    def take(self, start: int, stop: int) -> Split:
        """The contiguous examples ``start <= i < stop`` (views, no copy).

        Bounds are checked rather than clamped as Python slicing would, so an off-by-one in a
        caller shows up as an error instead of a silently smaller split.
        """
        if not 0 <= start <= stop <= len(self):
            raise ValueError(f"take({start}, {stop}) is out of range for a split of {len(self)}")
        return Split(images=self.images[start:stop], labels=self.labels[start:stop])


@dataclass(frozen=True, eq=False)
class ImageData:
    """A dataset: the full training file, the test file, and where validation begins.

    The validation images are kept inside ``train`` (as the tail) because that is how the source
    files order them; :attr:`training` and :attr:`validation` cut the two apart.

    Attributes:
        train: all training images — for MNIST 60,000: 50,000 training followed by 10,000 validation.
        test: the test split (10,000 for MNIST).
        n_validation: how many images at the end of ``train`` form the validation split.
    """

    train: Split
    test: Split
    n_validation: int

    def __post_init__(self) -> None:
        if not 0 <= self.n_validation <= len(self.train):
            raise ValueError(
                f"n_validation={self.n_validation} must lie between 0 and the {len(self.train)} "
                "training images"
            )
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise ValueError(
                f"train images are {tuple(self.train.images.shape[1:])} but test images are "
                f"{tuple(self.test.images.shape[1:])}"
            )

    @property
    def training(self) -> Split:
        """``train`` without its validation tail."""
        return self.train.take(0, len(self.train) - self.n_validation)

    @property
    def validation(self) -> Split:
        """The last ``n_validation`` images of ``train``."""
        return self.train.take(len(self.train) - self.n_validation, len(self.train))


def iterate_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    seed: int,
    drop_last: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An endless stream of minibatches, reshuffled every epoch, reproducible from ``seed``.

    The permutation is drawn on the CPU (so the order does not depend on the device) and only
    the index is moved to each tensor's device. With ``drop_last`` every batch has exactly
    ``batch_size`` examples, which keeps per-step statistics comparable.
    """
    n = int(images.shape[0])
    if labels.shape[0] != n:
        raise ValueError(f"{n} images but {labels.shape[0]} labels")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n == 0 or (drop_last and batch_size > n):
        raise ValueError(
            f"no full batch of {batch_size} can be formed from {n} examples (drop_last={drop_last})"
        )
    generator = torch.Generator().manual_seed(seed)
    while True:
        permutation = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = permutation[start : start + batch_size]
            if drop_last and index.shape[0] < batch_size:
                break
            yield images[index.to(images.device)], labels[index.to(labels.device)]
