"""CIFAR-10/100 loaders on tiny fixtures in the official pickle format, and their error messages."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnleak.data import load_dataset
from unlearnleak.data.cifar import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR100_COARSE_CLASSES, CIFAR100_STD
from unlearnleak.errors import ConfigError, DataError


def _sizes(raw: dict[str, np.ndarray]) -> dict[int, int]:
    return {k: len(raw[f"data_batch_{k}"]) for k in range(1, 6)}


def test_cifar10_train_concatenates_all_batches(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, raw = cifar10_dir
    sizes = _sizes(raw)
    assert len(set(sizes.values())) > 1  # the fixture's batches differ in size: nothing may assume 10000
    ds = load_dataset("cifar10", "train", data_dir=root)
    assert len(ds) == sum(sizes.values())
    assert ds.x.shape == (len(ds), 3, 32, 32) and ds.x.dtype == torch.float32
    assert ds.y.dtype == torch.int64 and ds.kind == "image"
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    assert ds.classes == CIFAR10_CLASSES and ds.mean == CIFAR10_MEAN
    expected_labels = np.concatenate([raw[f"data_batch_{k}_labels"] for k in range(1, 6)])
    assert ds.y.tolist() == expected_labels.tolist()
    assert ds.x[0, 0, 2, 5].item() == pytest.approx(200 / 255)  # red plane, row 2, col 5
    assert ds.x[0, 1, 0, 0].item() == pytest.approx(17 / 255)  # green plane, row 0, col 0
    # Every byte maps exactly to byte/255 in the (C, H, W) layout.
    last = raw["data_batch_5"][-1].reshape(3, 32, 32)
    assert torch.equal(ds.x[-1], torch.from_numpy(last).float() / 255)
    assert ds.provenance.counts["train"] == len(ds)
    assert ds.provenance.counts["data_batch_3"] == sizes[3]
    names = [Path(r.path).name for r in ds.provenance.files]
    assert names[:5] == [f"data_batch_{k}" for k in range(1, 6)] and "batches.meta" in names
    assert all(len(r.sha256) == 64 and r.size > 0 for r in ds.provenance.files)


def test_cifar10_batches_option_selects_in_order(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, raw = cifar10_dir
    sizes = _sizes(raw)
    ds = load_dataset("cifar10", "train", data_dir=root, batches=(3, 1))
    assert len(ds) == sizes[3] + sizes[1]
    assert ds.y.tolist() == [*raw["data_batch_3_labels"].tolist(), *raw["data_batch_1_labels"].tolist()]
    first_of_batch1 = ds.x[sizes[3]]
    assert first_of_batch1[0, 2, 5].item() == pytest.approx(200 / 255)


def test_cifar10_test_split(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, raw = cifar10_dir
    ds = load_dataset("cifar10", "test", data_dir=root)
    assert len(ds) == len(raw["test_batch"]) and ds.split == "test"
    assert ds.y.tolist() == raw["test_batch_labels"].tolist()


@pytest.mark.parametrize("batches", [(0,), (6,), (), (1, 1)])
def test_cifar10_bad_batches_are_config_errors(cifar10_dir: tuple[Path, dict[str, np.ndarray]],
                                               batches: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="batches"):
        load_dataset("cifar10", "train", data_dir=cifar10_dir[0], batches=batches)
    with pytest.raises(ConfigError, match="batches"):
        load_dataset("cifar10", "test", data_dir=cifar10_dir[0], batches=batches)


def test_cifar10_batches_leave_the_test_split_alone(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, raw = cifar10_dir
    ds = load_dataset("cifar10", "test", data_dir=root, batches=[2, 3])  # one options dict for both splits
    assert len(ds) == len(raw["test_batch"]) and ds.provenance.notes == "batches: test_batch"


def test_cifar100_fine_and_coarse(cifar100_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, raw = cifar100_dir
    fine = load_dataset("cifar100", "train", data_dir=root)
    assert len(fine) == len(raw["train"]) and fine.num_classes == 100
    assert fine.y.tolist() == raw["train_fine"].tolist()
    assert fine.extra_labels["coarse"].tolist() == raw["train_coarse"].tolist()
    assert fine.x[1, 2, 31, 0].item() == pytest.approx(99 / 255)  # blue plane, row 31, col 0
    assert fine.std == CIFAR100_STD
    coarse = load_dataset("cifar100", "test", data_dir=root, label="coarse")
    assert coarse.classes == CIFAR100_COARSE_CLASSES
    assert coarse.y.tolist() == raw["test_coarse"].tolist()
    assert coarse.extra_labels["fine"].tolist() == raw["test_fine"].tolist()
    sub = fine.subset([2, 0])
    assert sub.extra_labels["coarse"].tolist() == [raw["train_coarse"][2], raw["train_coarse"][0]]
    with pytest.raises(ConfigError, match="label"):
        load_dataset("cifar100", "train", data_dir=root, label="medium")


def test_missing_folder_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", "train", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "unlearnleak data download cifar10" in message
    assert "cifar-10-python.tar.gz" in message


def test_data_dir_from_environment(cifar10_dir: tuple[Path, dict[str, np.ndarray]],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARNLEAK_DATA_DIR", os.fspath(cifar10_dir[0]))
    assert len(load_dataset("cifar10", "test")) == len(cifar10_dir[1]["test_batch"])


def test_truncated_batch_names_the_file(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar10_dir
    path = root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", "train", data_dir=root)
    assert str(path) in str(info.value) and "truncated" in str(info.value)
    assert "unlearnleak data download cifar10" in str(info.value)


def _rewrite(path: Path, **changes: object) -> None:
    with path.open("rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    batch.update({k.encode(): v for k, v in changes.items()})
    with path.open("wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def test_wrong_row_size(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar10_dir
    path = root / "cifar-10-batches-py" / "test_batch"
    _rewrite(path, data=np.zeros((4, 3000), dtype=np.uint8))
    with pytest.raises(DataError, match=r"3072 bytes .*found 3000") as info:
        load_dataset("cifar10", "test", data_dir=root)
    assert str(path) in str(info.value)


def test_label_count_mismatch_and_range(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar10_dir
    path = root / "cifar-10-batches-py" / "test_batch"
    _rewrite(path, labels=[0])
    with pytest.raises(DataError, match="1 entries but b'data' has 4 rows"):
        load_dataset("cifar10", "test", data_dir=root)
    _rewrite(path, labels=[0, 1, 2, 10])
    with pytest.raises(DataError, match=r"0\.\.9"):
        load_dataset("cifar10", "test", data_dir=root)


def test_missing_key_and_wrong_type(cifar100_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar100_dir
    path = root / "cifar-100-python" / "test"
    with path.open("wb") as handle:
        pickle.dump({b"data": np.zeros((2, 3072), dtype=np.uint8)}, handle, protocol=2)
    with pytest.raises(DataError, match="fine_labels"):
        load_dataset("cifar100", "test", data_dir=root)
    with path.open("wb") as handle:
        pickle.dump([1, 2, 3], handle, protocol=2)
    with pytest.raises(DataError, match="expected a pickled dict"):
        load_dataset("cifar100", "test", data_dir=root)
    (root / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DataError, match=r"missing file .*meta"):
        load_dataset("cifar100", "train", data_dir=root)


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_pickle_with_foreign_global_is_refused(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar10_dir
    path = root / "cifar-10-batches-py" / "batches.meta"
    with path.open("wb") as handle:
        pickle.dump({b"label_names": _Exploit()}, handle, protocol=2)
    with pytest.raises(DataError, match=r"system, which is not allowed") as info:
        load_dataset("cifar10", "test", data_dir=root)
    assert str(path) in str(info.value)


def test_unknown_option_is_a_config_error(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    with pytest.raises(ConfigError, match="its options are: batches"):
        load_dataset("cifar10", "test", data_dir=cifar10_dir[0], label="fine")
    with pytest.raises(ConfigError, match=r"its options are: \(none\)"):
        load_dataset("stl10", "test", batches=(1,))


def test_codecs_encode_only_for_latin1(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    import codecs

    class _Rot13:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (codecs.encode, ("abc", "rot13"))

    root, _ = cifar10_dir
    path = root / "cifar-10-batches-py" / "test_batch"
    with path.open("wb") as handle:
        pickle.dump({b"data": _Rot13()}, handle, protocol=2)
    with pytest.raises(DataError, match="encoding 'rot13', which is not allowed"):
        load_dataset("cifar10", "test", data_dir=root)
