"""The task suite: registry, splits and the derived dataset variants."""

from __future__ import annotations

import pytest
import torch

from rlopt.data import ImageData
from rlopt.models import MODEL_NAMES, build_model, count_parameters
from rlopt.tasks import (
    DATASET_VARIANTS,
    DEFAULT_TASK,
    HELD_OUT_DATASET,
    HELD_OUT_MODEL,
    TASKS,
    derive_dataset,
    get_task,
    tasks_in,
)


def test_splits_partition_the_registry_and_hold_out_a_model_and_a_dataset() -> None:
    train, held_out = tasks_in("train"), tasks_in("held-out")
    assert set(TASKS) == {t.name for t in train} | {t.name for t in held_out}
    assert not {t.name for t in train} & {t.name for t in held_out}
    assert all(t.model != HELD_OUT_MODEL and t.dataset != HELD_OUT_DATASET for t in train)
    assert any(t.model == HELD_OUT_MODEL for t in held_out) and any(t.dataset == HELD_OUT_DATASET for t in held_out)
    assert get_task(DEFAULT_TASK).split == "train"


def test_the_suite_covers_the_issue_s_axes() -> None:
    tasks = TASKS.values()
    assert {t.model for t in tasks} == set(MODEL_NAMES)
    assert {t.dataset for t in tasks} == set(DATASET_VARIANTS)
    assert {t.batch_size for t in tasks} == {32, 128}
    assert {t.optimizer for t in tasks} == {"sgd", "adam"}
    assert all(t.description for t in tasks)
    default = get_task(DEFAULT_TASK)
    assert (default.dataset, default.model, default.batch_size, default.optimizer) == ("mnist", "cnn", 32, "sgd")


@pytest.mark.parametrize(("name", "spec"), [
    ("rotated-mlp-relu", ("rotated", "mlp-relu", 32, "sgd")),
    ("digits0-4-cnn-b64-adam", ("digits0-4", "cnn", 64, "adam")),
    ("inverted-cnn-wide-b128-rsgd", ("inverted", "cnn-wide", 128, "rsgd")),
    ("mnist-mlp-b128", ("mnist", "mlp", 128, "sgd")),
    ("permuted-mlp-relu-momentum", ("permuted", "mlp-relu", 32, "momentum")),
])
def test_names_outside_the_registry_compose_a_held_out_task(name: str, spec: tuple[object, ...]) -> None:
    task = get_task(name)
    assert name not in TASKS and task.name == name and task.split == "held-out"
    assert (task.dataset, task.model, task.batch_size, task.optimizer) == spec


@pytest.mark.parametrize("name", ["mnist-cnn-b32", "mnist-cnn-sgd", "permuted-mlp-relu-b32-sgd"])
def test_a_composed_name_has_one_spelling(name: str) -> None:
    with pytest.raises(ValueError, match="is spelled"):
        get_task(name)


@pytest.mark.parametrize("name", ["imagenet-cnn", "mnist-resnet", "mnist-cnn-b0", "mnist-cnn-adam-b64", "mnist-cnnx",
                                  "mnist"])
def test_names_that_compose_nothing_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown task"):
        get_task(name)


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(ValueError, match="mnist-cnn"):
        get_task("imagenet")
    with pytest.raises(ValueError, match="held-out"):
        tasks_in("test")  # type: ignore[arg-type]


@pytest.mark.parametrize("variant", DATASET_VARIANTS)
def test_every_variant_is_derived_from_the_base_data(variant: str, tiny_data: ImageData) -> None:
    derived = derive_dataset(tiny_data, variant)  # type: ignore[arg-type]
    base = tiny_data
    if variant == "digits0-4":
        assert (derived.train.labels < 5).all() and (derived.test.labels < 5).all()
        assert len(derived.training) == int((base.training.labels < 5).sum())
        assert len(derived.validation) == int((base.validation.labels < 5).sum())
        return
    assert len(derived.training) == len(base.training) and len(derived.validation) == len(base.validation)
    assert torch.equal(derived.train.labels, base.train.labels)
    images, original = derived.test.images, base.test.images
    if variant == "mnist":
        assert derived is base
    elif variant == "inverted":
        assert torch.equal(images, 255 - original)
    elif variant == "rotated":
        assert torch.equal(torch.rot90(images, -1, dims=(1, 2)), original)
    else:  # permuted: the same pixels of every image, in one fixed order shared by all images
        assert torch.equal(images.flatten(1).sort(dim=1).values, original.flatten(1).sort(dim=1).values)
        assert not torch.equal(images, original)
        again = derive_dataset(base, "permuted")
        assert torch.equal(again.train.images, derived.train.images)


def test_every_model_of_the_suite_trains_on_its_inputs(tiny_data: ImageData) -> None:
    x = tiny_data.test.float_images()[:4]
    for name in MODEL_NAMES:
        assert build_model(name)(x).shape == (4, 10)
    assert count_parameters(build_model("cnn-wide")) > 2 * count_parameters(build_model("cnn"))
