"""The data one task trains on: :func:`load_dataset` and :func:`task_splits`.

The environment, agent training and the evaluation all draw their training and validation subsets
here, so the same sizes and seed give the same images everywhere, and every size that does not fit
the data is refused at set-up with a one-line :class:`~rlopt.data.DataError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rlopt.data.containers import DataError, ImageData, Split
from rlopt.data.idx import load_idx_dataset
from rlopt.data.mnist import MNIST_N_CLASSES, load_mnist


@dataclass(frozen=True, eq=False)
class TaskSplits:
    """The three splits of one task; ``eq=False`` as for :class:`Split`.

    Attributes:
        train: ``train_size`` images drawn from the dataset's training split.
        validation: ``validation_size`` images drawn from the dataset's validation split.
        test: the dataset's full test split.
    """

    train: Split
    validation: Split
    test: Split


def load_dataset(data_dir: str | os.PathLike[str] | None = None, *, progress: bool = False) -> ImageData:
    """MNIST when data_dir is None, else the IDX dataset in data_dir.

    MNIST comes from :func:`~rlopt.data.load_mnist` (its cache in the default data directory, else a
    verified download); ``progress`` shows that download and parsing on stderr. An IDX directory is read
    by :func:`~rlopt.data.load_idx_dataset` with its default validation share; label range is checked
    by :func:`task_splits` against the model's classes.
    """
    if data_dir is None:
        return load_mnist(progress=progress)
    return load_idx_dataset(data_dir)


def task_splits(
    data: ImageData,
    train_size: int,
    validation_size: int,
    *,
    seed: int = 0,
    num_classes: int = MNIST_N_CLASSES,
    batch_size: int = 1,
) -> TaskSplits:
    """The training and validation subsets of a task, and the full test split.

    ``train`` is ``data.training.subset(train_size, seed=seed)`` and ``validation`` is
    ``data.validation.subset(validation_size, seed=seed)``: the same seed gives the same images on any
    device.

    Raises DataError (one-line message naming the numbers) when train_size/validation_size exceed the
    data, train_size < batch_size, batch_size < 1, or any label lies outside [0, num_classes).
    Every label of ``data`` (training, validation and test) is checked, so whether a dataset is
    accepted does not depend on ``seed``.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    if num_classes < 1:
        raise DataError(f"num_classes must be at least 1, got {num_classes}")
    if validation_size < 0:
        raise DataError(f"validation_size must be >= 0, got {validation_size}")
    if train_size < batch_size:
        raise DataError(f"train_size {train_size} is smaller than one batch of {batch_size}")
    if train_size > len(data.training):
        raise DataError(
            f"train_size {train_size} exceeds the {len(data.training)} training images of the dataset"
        )
    if validation_size > len(data.validation):
        raise DataError(
            f"validation_size {validation_size} exceeds the {len(data.validation)} validation images "
            "of the dataset"
        )
    for name, split in (("train", data.train), ("test", data.test)):
        labels = split.labels
        outside = ((labels < 0) | (labels >= num_classes)).nonzero()
        if outside.numel():
            index = int(outside[0, 0])
            raise DataError(
                f"label {int(labels[index])} (example {index} of the {name} split) lies outside "
                f"0..{num_classes - 1}, the model's {num_classes} classes"
            )
    return TaskSplits(
        train=data.training.subset(train_size, seed=seed),
        validation=data.validation.subset(validation_size, seed=seed),
        test=data.test,
    )
