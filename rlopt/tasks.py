"""Training tasks: what one controlled training run learns, and how big it is.

A task is a dataset variant, a model, a batch size and an optimizer family, with a name and a
one-line description (the instance set of DACBench's SGD benchmark plays the same role). The
registry :data:`TASKS` has two splits: ``train``, the tasks agents may learn on, and ``held-out``,
which only evaluation uses. The model ``cnn-wide`` and the dataset variant ``rotated`` appear in no
``train`` task, so an agent never sees them before it is measured on them. Every dataset variant is
derived from the base dataset (MNIST, or any IDX directory) by :func:`derive_dataset`: no new data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from rlopt.data.containers import PIXEL_MAX, ImageData, Split
from rlopt.models import MODEL_NAMES, ModelName

#: the optimizer families a task trains with and a policy can be trained on
OptimizerName = Literal["sgd", "momentum", "adam", "rsgd"]
OPTIMIZER_NAMES: tuple[OptimizerName, ...] = get_args(OptimizerName)


@dataclass(frozen=True)
class TaskSize:
    """The size of a training task: the one home of these defaults (Zhu, Hayashi & Ohsawa §4).

    The environment, agent training and the evaluation take their defaults from here.

    Attributes:
        train_size: training images the network learns from (8,000 MNIST images in §4).
        validation_size: held-out images (from the dataset's validation split) scored at the end
            of an episode or run.
        batch_size: mini-batch size (32).
        episode_steps: training steps of one agent-training episode (250).
    """

    train_size: int = 8000
    validation_size: int = 2000
    batch_size: int = 32
    episode_steps: int = 250

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.episode_steps < 1 or self.validation_size < 0:
            raise ValueError(
                f"batch_size and episode_steps must be >= 1 and validation_size >= 0, got {self}"
            )
        if self.train_size < self.batch_size:
            raise ValueError(f"train_size {self.train_size} is smaller than one batch of {self.batch_size}")


#: dataset variants, all derived from the base dataset (MNIST, or an IDX directory) without new data
DatasetVariant = Literal["mnist", "permuted", "rotated", "inverted", "digits0-4"]
DATASET_VARIANTS: tuple[DatasetVariant, ...] = get_args(DatasetVariant)
#: the task splits: agents may learn on ``train``; ``held-out`` is for evaluation only
TaskSplit = Literal["train", "held-out"]
TASK_SPLITS: tuple[TaskSplit, ...] = get_args(TaskSplit)

_PERMUTATION_SEED = 0
_SUBSET_CLASSES = 5


def _permuted(images: torch.Tensor) -> torch.Tensor:
    n, h, w = images.shape
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(_PERMUTATION_SEED))
    return images.reshape(n, h * w)[:, order.to(images.device)].reshape(n, h, w)


def _variant_split(split: Split, variant: DatasetVariant) -> Split:
    if variant == "mnist":
        return split
    if variant == "permuted":
        return Split(_permuted(split.images), split.labels)
    if variant == "rotated":
        return Split(torch.rot90(split.images, 1, dims=(1, 2)).contiguous(), split.labels)
    if variant == "inverted":
        return Split(PIXEL_MAX - split.images, split.labels)
    keep = split.labels < _SUBSET_CLASSES  # digits0-4
    return Split(split.images[keep], split.labels[keep])


def derive_dataset(data: ImageData, variant: DatasetVariant) -> ImageData:
    """The dataset ``variant`` of ``data`` (the name says what it is of the base dataset):

    ``mnist`` the images as they are; ``permuted`` every image's pixels in one fixed random order
    (seed 0), a task no convolution helps with; ``rotated`` every image turned 90° counter-clockwise;
    ``inverted`` 255 − pixel; ``digits0-4`` only the examples of classes 0-4 (labels unchanged, so
    the model keeps its 10 outputs). Validation stays the tail of ``train``; for ``digits0-4`` it is
    the tail's examples of those classes.
    """
    if variant not in DATASET_VARIANTS:
        raise ValueError(f"unknown dataset variant {variant!r}; choose one of {', '.join(DATASET_VARIANTS)}")
    if variant == "mnist":
        return data
    training = _variant_split(data.training, variant)
    validation = _variant_split(data.validation, variant)
    train = Split(torch.cat([training.images, validation.images]), torch.cat([training.labels, validation.labels]))
    return ImageData(train=train, test=_variant_split(data.test, variant), n_validation=len(validation))


@dataclass(frozen=True)
class Task:
    """One training problem of the suite.

    Attributes:
        name: how command lines and results name it.
        dataset: the dataset variant (:func:`derive_dataset`).
        model: :data:`rlopt.models.MODEL_NAMES`; its loss is :func:`rlopt.models.loss_function`.
        batch_size: mini-batch size.
        optimizer: the optimizer family a controller steers (``sgd``, ``momentum`` or ``adam``; ``rsgd`` for
            R-SGD control).
        split: ``train`` (agents may learn on it) or ``held-out`` (evaluation only).
        description: one line for tables and ``--help``.
    """

    name: str
    dataset: DatasetVariant
    model: ModelName
    batch_size: int
    optimizer: OptimizerName
    split: TaskSplit
    description: str


def _task(dataset: DatasetVariant, model: ModelName, batch_size: int, optimizer: OptimizerName,
          split: TaskSplit, description: str) -> Task:
    parts: list[str] = [dataset, model]
    if batch_size != TaskSize.batch_size:
        parts.append(f"b{batch_size}")
    if optimizer != "sgd":
        parts.append(optimizer)
    return Task("-".join(parts), dataset, model, batch_size, optimizer, split, description)


#: held out of every agent training: this model and this dataset variant appear in no ``train`` task
HELD_OUT_MODEL: ModelName = "cnn-wide"
HELD_OUT_DATASET: DatasetVariant = "rotated"

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        _task("mnist", "cnn", 32, "sgd", "train", "Zhu et al.'s setting: MNIST, their 3-layer CNN, batch 32, SGD"),
        _task("mnist", "cnn", 32, "adam", "train", "MNIST, the CNN, batch 32, Adam"),
        _task("mnist", "cnn", 128, "sgd", "train", "MNIST, the CNN, batch 128, SGD"),
        _task("permuted", "cnn", 32, "sgd", "train", "pixel-permuted MNIST, the CNN, batch 32, SGD"),
        _task("inverted", "cnn", 32, "adam", "train", "intensity-inverted MNIST, the CNN, batch 32, Adam"),
        _task("digits0-4", "cnn", 32, "sgd", "train", "MNIST digits 0-4 only, the CNN, batch 32, SGD"),
        _task("mnist", "mlp", 32, "sgd", "train",
              "MNIST, the R-SGD paper's sigmoid MLP 784-100-200-10 (quadratic error), batch 32, SGD"),
        _task("mnist", "mlp-relu", 128, "adam", "train", "MNIST, a ReLU MLP 784-100-200-10, batch 128, Adam"),
        _task("permuted", "mlp-relu", 32, "sgd", "train", "pixel-permuted MNIST, a ReLU MLP, batch 32, SGD"),
        _task("mnist", "cnn-wide", 32, "sgd", "held-out", "held-out model: MNIST, a CNN twice as wide, batch 32, SGD"),
        _task("rotated", "cnn", 32, "sgd", "held-out", "held-out dataset: MNIST rotated 90°, the CNN, batch 32, SGD"),
        _task("rotated", "cnn-wide", 128, "adam", "held-out",
              "held-out model and dataset: rotated MNIST, the wide CNN, batch 128, Adam"),
        _task("inverted", "mlp-relu", 32, "sgd", "held-out", "held-out pairing: inverted MNIST, a ReLU MLP, SGD"),
    )
}
#: the task of Zhu et al. §4, the default everywhere
DEFAULT_TASK = "mnist-cnn"


def _longest_prefix(name: str, choices: tuple[str, ...]) -> str | None:
    """The longest of ``choices`` that ``name`` is, or starts with followed by ``-``."""
    for choice in sorted(choices, key=len, reverse=True):
        if name == choice or name.startswith(choice + "-"):
            return choice
    return None


def _composed_task(name: str) -> Task | None:
    """The held-out task ``dataset-model[-bN][-optimizer]`` reads as (see :func:`get_task`), or ``None``."""
    dataset = _longest_prefix(name, DATASET_VARIANTS)
    rest = name[len(dataset) + 1:] if dataset is not None else ""
    model = _longest_prefix(rest, MODEL_NAMES)
    if dataset is None or model is None:
        return None
    batch_size, optimizer = TaskSize.batch_size, "sgd"
    parts = [p for p in rest[len(model):].split("-") if p]
    if parts and parts[0].startswith("b") and parts[0][1:].isdigit():
        batch_size = int(parts.pop(0)[1:])
    if parts and parts[0] in OPTIMIZER_NAMES:
        optimizer = parts.pop(0)
    if parts or batch_size < 1:
        return None
    return _task(dataset, model, batch_size, optimizer, "held-out",  # type: ignore[arg-type]
                 f"composed: {dataset} images, the {model} model, batch {batch_size}, {optimizer}")


def get_task(name: str) -> Task:
    """The task called ``name``: a registry task, else one composed as ``dataset-model[-bN][-optimizer]``.

    A composed task is any dataset variant, model, batch size and optimizer family outside the
    registry: ``rotated-mlp-relu`` is rotated MNIST, the ReLU MLP, batch 32, SGD;
    ``digits0-4-cnn-b64-adam`` the CNN on digits 0-4, batch 64, Adam. As in the registry, batch 32 and
    ``sgd`` are left out of the name. A composed task is ``held-out``: evaluations may use it, agent
    training may not. ``ValueError`` naming the choices for anything else.
    """
    if name in TASKS:
        return TASKS[name]
    task = _composed_task(name)
    if task is not None and task.name != name:
        raise ValueError(f"task {name!r} is spelled {task.name!r}: batch 32 and sgd are left out of task names")
    if task is None:
        raise ValueError(
            f"unknown task {name!r}; choose one of {', '.join(TASKS)}, or compose one as "
            f"dataset-model[-bN][-optimizer] from datasets {', '.join(DATASET_VARIANTS)}, models "
            f"{', '.join(MODEL_NAMES)} and optimizers {', '.join(OPTIMIZER_NAMES)} (batch 32 and sgd unwritten)"
        )
    return task


def tasks_in(split: TaskSplit) -> tuple[Task, ...]:
    """The tasks of one split, in registry order."""
    if split not in TASK_SPLITS:
        raise ValueError(f"unknown task split {split!r}; choose one of {', '.join(TASK_SPLITS)}")
    return tuple(t for t in TASKS.values() if t.split == split)
