"""Datasets in the standard IDX layout (MNIST, Fashion-MNIST, KMNIST, ...): :func:`read_idx`, :func:`load_idx_dataset`.

A directory holds the four files :data:`IDX_FILE_NAMES`, each raw or gzip-compressed. Every way a file
can be malformed is a :class:`~rlopt.data.DataError` naming the file, because a silently misread
dataset would only show up as a model that does not learn.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlopt.data.containers import DataError, ImageData, Split

IDX_TRAIN_IMAGES = "train-images-idx3-ubyte"
IDX_TRAIN_LABELS = "train-labels-idx1-ubyte"
IDX_TEST_IMAGES = "t10k-images-idx3-ubyte"
IDX_TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILE_NAMES = (IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS, IDX_TEST_IMAGES, IDX_TEST_LABELS)
"""The four standard IDX file names; each may also carry a ``.gz`` suffix."""

IDX_DEFAULT_VALIDATION_FRACTION = 1 / 6
"""Default validation share of an IDX training set: 10,000 of MNIST's 60,000."""

IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type codes (third byte of the magic number) and their big-endian numpy dtypes."""

_IDX_MAGIC_PREFIX = b"\x00\x00"
_IDX_MAGIC_LENGTH = 4
_IDX_DIM_BYTES = 4
_GZIP_MAGIC = b"\x1f\x8b"


def _read_maybe_gzip(path: Path) -> bytes:
    """File contents, gunzipped if the name ends in ``.gz`` or the bytes start with the gzip magic.

    The magic check cannot misfire on a raw IDX file, whose first byte is always zero.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error})") from error
    if path.suffix == ".gz" or raw.startswith(_GZIP_MAGIC):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(
                f"{path}: corrupt or truncated gzip data ({error}); download the file again"
            ) from error
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed) into a native-byte-order numpy array.

    Layout: magic ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then exactly
    prod(sizes) big-endian items. Anything else is a :class:`DataError` naming the file, because a
    silently misread dataset would only show up as a model that does not learn.
    """
    path = Path(path)
    content = _read_maybe_gzip(path)
    advice = "the file is damaged or not an IDX file; download it again"
    if len(content) < _IDX_MAGIC_LENGTH or content[:2] != _IDX_MAGIC_PREFIX:
        raise DataError(f"{path}: wrong magic number {content[:_IDX_MAGIC_LENGTH].hex()}; {advice}")
    type_code, ndim = content[2], content[3]
    if type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path}: wrong magic number {content[:_IDX_MAGIC_LENGTH].hex()} "
            f"(type code 0x{type_code:02x}, {ndim} dimensions); {advice}"
        )
    header_length = _IDX_MAGIC_LENGTH + _IDX_DIM_BYTES * ndim
    if len(content) < header_length:
        raise DataError(f"{path}: truncated header ({len(content)} of {header_length} bytes); {advice}")
    shape = tuple(int(size) for size in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    n_items = int(np.prod(shape, dtype=np.int64))
    expected_bytes = header_length + n_items * dtype.itemsize
    if len(content) < expected_bytes:
        raise DataError(
            f"{path}: truncated data: the header promises shape {shape} ({expected_bytes} bytes) "
            f"but the file has {len(content)} bytes; {advice}"
        )
    if len(content) > expected_bytes:
        raise DataError(
            f"{path}: {len(content) - expected_bytes} bytes of trailing garbage after shape {shape}; {advice}"
        )
    items = np.frombuffer(content, dtype=dtype, count=n_items, offset=header_length)
    # astype copies: the result is writable (torch.from_numpy warns otherwise) and native-endian.
    return items.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def find_idx_file(directory: Path, name: str) -> Path | None:
    """The raw or ``.gz`` variant of an IDX file in ``directory`` (raw preferred), or None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def has_any_idx_file(directory: Path) -> bool:
    """Whether ``directory`` holds at least one of the four standard IDX files."""
    return any(find_idx_file(directory, name) is not None for name in IDX_FILE_NAMES)


def _check_label_range(labels: np.ndarray, labels_path: Path, num_classes: int | None) -> None:
    """Labels are class indices: never negative, and below ``num_classes`` when it is given.

    The range is checked on the array as read, before the int64 conversion, so no value can wrap
    or be truncated on the way (an int32 label of 300 stays 300 and is refused).
    """
    if not labels.size:
        return
    lowest, highest = int(labels.min()), int(labels.max())
    if lowest < 0:
        index = int(np.argmin(labels))
        raise DataError(
            f"{labels_path}: negative label {lowest} (example {index}); labels must be class indices"
        )
    if num_classes is not None and highest >= num_classes:
        index = int(np.argmax(labels))
        raise DataError(
            f"{labels_path}: label {highest} (example {index}) lies outside 0..{num_classes - 1}, the "
            f"{num_classes} classes expected; the file belongs to another dataset or is damaged"
        )


def _idx_split(images_path: Path, labels_path: Path, num_classes: int | None) -> Split:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} "
            f"of shape {images.shape}; is this an images file (idx3-ubyte)?"
        )
    if labels.ndim != 1:
        raise DataError(
            f"{labels_path}: labels must be 1-D, got shape {labels.shape}; "
            "is this a labels file (idx1-ubyte)?"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{labels_path}: labels must be integers, got {labels.dtype}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; the two files do not belong together"
        )
    _check_label_range(labels, labels_path, num_classes)
    return Split(images=torch.from_numpy(images), labels=torch.from_numpy(labels.astype(np.int64)))


def load_idx_dataset(
    directory: str | os.PathLike[str], *, n_validation: int | None = None, num_classes: int | None = None
) -> ImageData:
    """Load a dataset stored as the four standard IDX files in ``directory``.

    Args:
        directory: holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or ``.gz``.
        n_validation: how many training images at the end form the validation split; default
            1/6 of the training set, rounded (10,000 for MNIST-sized data).
        num_classes: when given, every label must lie in ``0..num_classes - 1`` (the classes of the
            model that will train on it). Negative labels are refused in any case.

    Raises:
        DataError: a file is missing or malformed, the files do not belong together, or a label is
            negative or (with ``num_classes``) too large. The message names the file.
    """
    directory = Path(directory)
    found = {name: find_idx_file(directory, name) for name in IDX_FILE_NAMES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DataError(
            f"{directory}: missing IDX file(s) {', '.join(missing)}; the directory must hold all of "
            f"{', '.join(IDX_FILE_NAMES)} (each raw or with a .gz suffix)"
        )
    paths = {name: path for name, path in found.items() if path is not None}
    train = _idx_split(paths[IDX_TRAIN_IMAGES], paths[IDX_TRAIN_LABELS], num_classes)
    test = _idx_split(paths[IDX_TEST_IMAGES], paths[IDX_TEST_LABELS], num_classes)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(
            f"{directory}: training images are {tuple(train.images.shape[1:])} but test images are "
            f"{tuple(test.images.shape[1:])}; the files come from different datasets"
        )
    if n_validation is None:
        n_validation = round(len(train) * IDX_DEFAULT_VALIDATION_FRACTION)
    if not 0 <= n_validation <= len(train):
        raise ValueError(f"n_validation={n_validation} but {directory} has {len(train)} training images")
    return ImageData(train=train, test=test, n_validation=n_validation)
