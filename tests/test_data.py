r"""Tests for the zuko_lu.experiments.data module."""

import gzip
import sys

import numpy as np
import pytest
import torch

from zuko_lu.experiments.data import DataError, load, names, read_idx, write_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28),
        np.array([3, 1, 4, 1, 5], dtype=np.uint8),
        np.array([[-7, 2**31 - 1], [0, -(2**31)]], dtype=np.int32),
        np.linspace(-1, 1, 12).reshape(3, 4),
        np.array([-3, 100], dtype=np.int8),
        np.array([-300, 300], dtype=np.int16),
        np.array([0.5, -1.25], dtype=np.float32),
    ],
)
def test_idx_round_trip(tmp_path, array, gz):
    path = tmp_path / ("a-idx" + (".gz" if gz else ""))
    write_idx(path, array)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == gz

    out = read_idx(path)
    assert out.dtype == array.dtype and out.shape == array.shape
    assert np.array_equal(out, array)


def test_idx_header_by_hand(tmp_path):
    # magic 0x00000803: ubyte, 3 dims (1, 2, 2); big-endian dims
    path = tmp_path / "hand-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4]))
    assert read_idx(path).tolist() == [[[1, 2], [3, 4]]]

    path = tmp_path / "hand-idx1-int"  # int32 big-endian 258
    path.write_bytes(bytes([0, 0, 0x0C, 1, 0, 0, 0, 1, 0, 0, 1, 2]))
    assert read_idx(path).tolist() == [258]


def test_idx_errors(tmp_path):
    good = tmp_path / "good"
    write_idx(good, np.zeros((4, 3), dtype=np.uint8))
    raw = good.read_bytes()

    cases = {
        "truncated": raw[:-1],
        "toolong": raw + b"\x00",
        "header": raw[:6],
        "magic": b"\x01" + raw[1:],
        "dtype": raw[:2] + b"\x07" + raw[3:],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=name):
            read_idx(tmp_path / name)

    (tmp_path / "trunc.gz").write_bytes(gzip.compress(raw[:-2]))
    with pytest.raises(DataError, match="trunc.gz"):
        read_idx(tmp_path / "trunc.gz")
    with pytest.raises(DataError, match="nothere"):
        read_idx(tmp_path / "nothere")
    with pytest.raises(DataError):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


def fake_idx(folder, n_train=20, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        ext = ".gz" if gz else ""
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(folder / f"{part}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{part}-labels-idx1-ubyte{ext}", np.arange(n, dtype=np.uint8) % 10)
        gz = not gz  # mix plain and gzipped files


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_dataset(tmp_path, name):
    fake_idx(tmp_path)
    data = load(name, data_dir=tmp_path)
    assert data.kind == "image" and data.levels == 256 and data.shape == (28, 28)
    assert data.train.shape == (18, 784) and data.val.shape == (2, 784)
    assert data.test.shape == (10, 784) and data.train.dtype == torch.float32
    assert 0 <= data.train.min() and data.train.max() <= 255
    assert [len(v) for v in data.labels] == [18, 2, 10]

    one = load(name, data_dir=tmp_path, class_=3)
    assert all((v == 3).all() for v in one.labels)
    assert one.train.shape[0] + one.val.shape[0] == 2 and one.test.shape[0] == 1

    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load(name, data_dir=tmp_path)


def test_fashion_without_dir():
    with pytest.raises(DataError, match="--data-dir"):
        load("fashion-mnist")


@pytest.mark.parametrize("name", ["blobs", "moons", "circles"])
def test_toys(name):
    data = load(name)
    assert data.kind == "tabular" and data.levels is None and data.features == 2
    assert data.train.shape[0] + data.val.shape[0] == 9000 and data.test.shape[0] == 1000
    assert data.val.shape[0] == 900

    again, other = load(name), load(name, seed=1)
    assert torch.equal(data.train, again.train) and not torch.equal(data.train, other.train)
    assert torch.equal(data.test, other.test)  # the test set is the last 1,000 points


def test_class_filter():
    data = load("blobs", class_=2)
    assert all((v == 2).all() for v in data.labels)
    assert data.train.shape[0] + data.val.shape[0] + data.test.shape[0] == 2500

    with pytest.raises(DataError, match=r"\[0, 1, 2, 3\]"):
        load("blobs", class_=4)
    with pytest.raises(DataError, match="valid"):
        load("digits", class_=-1)


def test_digits():
    data = load("digits")
    assert data.levels == 17 and data.shape == (8, 8) and data.features == 64
    assert sum(len(v) for v in (data.train, data.val, data.test)) == 1797
    assert data.test.shape[0] == 359
    assert data.train.max() == 16 and data.train.min() == 0

    seven = load("digits", class_=7)
    assert all((v == 7).all() for v in seven.labels)


def test_mnist_shipped():
    data = load("mnist")
    assert (data.train.shape, data.val.shape, data.test.shape) == (
        (3600, 784),
        (400, 784),
        (1000, 784),
    )
    assert data.levels == 256 and data.shape == (28, 28) and data.train.max() == 255


@pytest.mark.parametrize("header", [False, True])
def test_csv(tmp_path, header):
    x = np.random.default_rng(0).normal(size=(50, 3))
    path = tmp_path / "t.csv"
    np.savetxt(path, x, delimiter=",", header="a,b,c" if header else "", comments="")
    data = load("csv", path=path)
    assert data.kind == "tabular" and data.labels is None
    assert (data.train.shape[0], data.val.shape[0], data.test.shape[0]) == (40, 5, 5)
    everything = torch.cat([data.train, data.val, data.test])
    assert torch.equal(everything.sort(0).values, torch.tensor(x).sort(0).values)

    with pytest.raises(DataError, match="no labels"):
        load("csv", path=path, class_=0)


def test_npy(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, np.arange(10.0))
    data = load("npy", path=path)
    assert data.features == 1
    assert sum(len(v) for v in (data.train, data.val, data.test)) == 10

    np.save(path, np.zeros((2, 4)))
    with pytest.raises(DataError, match="at least 3"):
        load("npy", path=path)
    np.save(path, np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="3-D"):
        load("npy", path=path)


def test_table_errors(tmp_path):
    x = np.ones((6, 3))
    x[4, 1] = np.inf
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(DataError, match=r"bad.npy.*row 4, column 1"):
        load("npy", path=tmp_path / "bad.npy")

    (tmp_path / "bad.csv").write_text("x,y\n1,2\n3,nan\n5,6\n")
    with pytest.raises(DataError, match=r"bad.csv.*row 1, column 1"):
        load("csv", path=tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n5,6\n")
    with pytest.raises(DataError, match="ragged.csv"):
        load("csv", path=tmp_path / "ragged.csv")
    with pytest.raises(DataError, match="missing.csv"):
        load("csv", path=tmp_path / "missing.csv")


def test_unknown_name():
    assert "mnist" in names() and "fashion-mnist" in names() and "csv" in names()
    with pytest.raises(DataError, match="blobs.*digits.*fashion-mnist") as info:
        load("cifar")
    assert isinstance(info.value, ValueError)


def test_missing_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import raises ImportError
    with pytest.raises(DataError, match=r"pip install \"zuko-lu\[data\]\""):
        load("digits")


def read_csv(tmp_path, text, encoding="utf-8"):
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode(encoding))
    data = load("csv", path=path, val_fraction=0)
    return torch.cat([data.train, data.test]).sort(0).values


ROWS = "1.5,2\n3,4.25\n5,6\n7,8\n"
TABLE = torch.tensor([[1.5, 2], [3, 4.25], [5, 6], [7, 8]], dtype=torch.float64)


@pytest.mark.parametrize(
    "text",
    [
        ROWS,  # plain numbers
        "a,b\n" + ROWS,  # a header with names
        "\ufeff" + ROWS,  # a byte-order mark, no header: the first row is data
        "\ufeffa,b\n" + ROWS,  # a byte-order mark and a header
        "\n# written by hand\n\na,b\n" + ROWS,  # blank lines and comments before the header
        "# note\n" + ROWS.replace("\n", " # ok\n", 1) + "\n",  # comments after data
        '"a","b"\n' + ROWS,  # quoted names
        "a,2\n" + ROWS,  # a header with a numeric name
        ",a,b\n" + "".join(f"{i},{r}\n" for i, r in enumerate(ROWS.split())),  # pandas index
        "Unnamed: 0,a,b\n" + "".join(f"{i},{r}\n" for i, r in enumerate(ROWS.split())),
    ],
)
def test_csv_dialects(tmp_path, text):
    assert torch.equal(read_csv(tmp_path, text), TABLE)


def test_csv_index_column_kept_when_named_or_headerless(tmp_path):
    named = "i,a,b\n" + "".join(f"{i},{r}\n" for i, r in enumerate(ROWS.split()))
    assert read_csv(tmp_path, named).shape == (4, 3)
    bare = "".join(f"{i},{r}\n" for i, r in enumerate(ROWS.split()))
    assert read_csv(tmp_path, bare).shape == (4, 3)


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n\n1,2\n3,x\n5,6\n")
    with pytest.raises(DataError, match=r"line 4, column 1.*'x'"):
        load("csv", path=path)
    path.write_text("# c\n1,2\n3,4\n5\n")
    with pytest.raises(DataError, match=r"line 4 has 1 fields"):
        load("csv", path=path)
    path.write_text("a,b\n# nothing\n")
    with pytest.raises(DataError, match="no data rows"):
        load("csv", path=path)
    path.write_bytes(b"\xff\xfe1,2\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load("csv", path=path)


def test_npy_refuses_other_files(tmp_path):
    path = tmp_path / "t.npy"
    path.write_text("1,2\n3,4\n5,6\n")
    with pytest.raises(DataError, match=r"t.npy' is not a .npy file") as info:
        load("npy", path=path)
    assert "pickle" not in str(info.value) and "\n" not in str(info.value)

    np.savez(tmp_path / "t.npz", x=np.zeros((5, 2)))
    with pytest.raises(DataError, match=r"\.npz archive"):
        load("npy", path=tmp_path / "t.npz")
    np.save(path, np.array([[1, "a"]] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="Python objects"):
        load("npy", path=path)


def test_table_precision(tmp_path):
    # timestamps 1.7e9 +- 1 and values beyond float32 keep their spread: tables are float64
    rng = np.random.default_rng(0)
    x = np.stack([1.7e9 + rng.uniform(-1, 1, 20), 1e39 * rng.normal(size=20)], axis=1)
    np.save(tmp_path / "t.npy", x)
    data = load("npy", path=tmp_path / "t.npy", val_fraction=0)
    everything = torch.cat([data.train, data.test])
    assert torch.isfinite(everything).all()
    assert torch.equal(everything.sort(0).values, torch.from_numpy(x).sort(0).values)
    assert len(data.train[:, 0].unique()) == len(data.train)


@pytest.mark.parametrize("kind", ["csv", "npy"])
def test_constant_column_refused(tmp_path, kind):
    x = np.random.default_rng(0).normal(size=(10, 3))
    x[:, 1] = 5.0
    path = tmp_path / f"t.{kind}"
    np.savetxt(path, x, delimiter=",") if kind == "csv" else np.save(path, x)
    with pytest.raises(DataError, match=r"column 1 \(0-based\) is constant \(5\)"):
        load(kind, path=path)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.full((20, 4, 4), 0.5, dtype=np.float32), r"\[0.5, 0.5\].*scaled to \[0, 1\]"),
        (np.full((20, 4, 4), 300, dtype=np.int16), r"\[300, 300\], not integer pixel levels"),
    ],
)
def test_idx_images_must_be_levels(tmp_path, images, match):
    fake_idx(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(20, dtype=np.uint8))
    with pytest.raises(DataError, match=match):
        load("mnist", data_dir=tmp_path)
