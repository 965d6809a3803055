"""Test-only data helpers: a tiny seeded MNIST look-alike and an IDX writer.

Importable from any test module as ``from helpers import ...``: pytest puts ``tests/`` (which has no
``__init__.py``) on ``sys.path`` before it imports ``conftest.py`` and the test modules.

The IDX writer is written independently of :mod:`rlopt.data.idx` (its own type-code table), so the
reader's tests compare against a second implementation rather than against the reader's own tables.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from rlopt.data import (
    IDX_TEST_IMAGES,
    IDX_TEST_LABELS,
    IDX_TRAIN_IMAGES,
    IDX_TRAIN_LABELS,
    MNIST_IMAGE_SHAPE,
    MNIST_N_CLASSES,
    ImageData,
    Split,
)

IDX_TYPE_CODES: dict[np.dtype, int] = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}
"""IDX type codes (third byte of the magic number) by native numpy dtype."""

_PIXEL_MAX = 255

_FAKE_NOISE_STD = 48.0
"""Pixel noise (on the 0..255 scale) added to each fake image's class template."""

_FAKE_TEMPLATE_LOW, _FAKE_TEMPLATE_HIGH = 32.0, 224.0
"""Fake class templates are random dark/bright pixel patterns at these two levels."""

_FAKE_BRIGHT_FRACTION = 0.5
"""Share of bright pixels in a fake class template; 0.5 makes any two templates differ in ~half
their pixels, so the classes are easy to separate."""


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` encoded in the IDX format: magic, big-endian uint32 sizes, big-endian items."""
    native = np.dtype(array.dtype).newbyteorder("=")
    if native not in IDX_TYPE_CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, IDX_TYPE_CODES[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.asarray(array).astype(native.newbyteorder(">")).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write one array as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    path = Path(path)
    payload = idx_bytes(array)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def save_idx_dataset(data: ImageData, directory: str | os.PathLike[str], *, compress: bool = True) -> Path:
    """Write ``data`` as the four standard IDX files, readable by :func:`rlopt.data.load_idx_dataset`.

    The validation split is not recorded (IDX has no place for it): pass ``n_validation`` on load.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    labels_dtype = np.uint8 if int(max(data.train.labels.max(), data.test.labels.max())) < 256 else np.int32
    for split, images_name, labels_name in (
        (data.train, IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS),
        (data.test, IDX_TEST_IMAGES, IDX_TEST_LABELS),
    ):
        write_idx(directory / f"{images_name}{suffix}", split.images.numpy())
        write_idx(directory / f"{labels_name}{suffix}", split.labels.numpy().astype(labels_dtype))
    return directory


def fake_image_data(
    n_train: int = 512, n_test: int = 128, *, seed: int = 0, n_validation: int = 64
) -> ImageData:
    """A tiny, seeded, in-memory MNIST look-alike for tests: same seed, identical tensors.

    Ten classes, 28x28 uint8 images; each class is a fixed random bright/dark template and every
    image adds seeded Gaussian noise. The classes are therefore separable, so a small MLP or CNN
    visibly lowers its loss within ~100 SGD steps — which is what tests of trainers and
    environments need — while no file or network is involved.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    generator = torch.Generator().manual_seed(seed)
    bright = torch.rand((MNIST_N_CLASSES, *MNIST_IMAGE_SHAPE), generator=generator) < _FAKE_BRIGHT_FRACTION
    templates = torch.where(bright, _FAKE_TEMPLATE_HIGH, _FAKE_TEMPLATE_LOW)

    def make_split(n: int) -> Split:
        # Balanced classes in random order, so any prefix or batch sees every class.
        labels = (torch.arange(n) % MNIST_N_CLASSES)[torch.randperm(n, generator=generator)]
        noise = torch.randn((n, *MNIST_IMAGE_SHAPE), generator=generator) * _FAKE_NOISE_STD
        pixels = (templates[labels] + noise).round_().clamp_(0, _PIXEL_MAX)
        return Split(images=pixels.to(torch.uint8), labels=labels.to(torch.int64))

    train = make_split(n_train)
    test = make_split(n_test)
    return ImageData(train=train, test=test, n_validation=n_validation)


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module. benchmarks/ is not a package, so it is loaded by
    path, registered in ``sys.modules`` first (as dataclasses need)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
