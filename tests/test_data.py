import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from rslad_tune.trial.data import apply_views, load_splits, sample_views
from rslad_tune.trial.errors import DataError


def _write_idx(folder, prefix, images, labels):
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, len(images), 28, 28) + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 0x801, len(labels)) + labels.tobytes())


def test_fashion_mnist_from_debian_style_gz_files(tmp_path, monkeypatch):
    monkeypatch.setenv("RSLAD_TUNE_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "fmnist"
    src.mkdir()
    rng = np.random.default_rng(0)
    tr_x, tr_y = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), rng.integers(0, 10, 50, dtype=np.uint8)
    te_x, te_y = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20, dtype=np.uint8)
    _write_idx(src, "train", tr_x, tr_y)
    _write_idx(src, "t10k", te_x, te_y)
    s = load_splits("fashion_mnist", data_dir=str(src), val_size=10)
    assert s.train_x.shape == (40, 1, 28, 28) and s.val_x.shape == (10, 1, 28, 28) and s.test_x.shape == (20, 1, 28, 28)
    assert torch.equal(s.test_x, torch.from_numpy(te_x).float().unsqueeze(1) / 255)
    assert torch.equal(s.test_y, torch.from_numpy(te_y).long())
    # train + val is a partition of the training images
    both = torch.cat([s.train_x, s.val_x]).flatten(1)
    ref = torch.from_numpy(tr_x).float().flatten(1) / 255
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, ref.tolist()))
    assert s.augment == "none" and s.num_classes == 10


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="data_dir.*holds no Fashion-MNIST"):
        load_splits("fashion_mnist", data_dir=str(tmp_path))


def test_cifar10_from_a_local_folder_in_cifar_format(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    # our files are not the real ones, so torchvision's md5 check is the only thing bypassed
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: True)
    s = load_splits("cifar10", data_dir=str(tmp_path), val_size=5)
    assert s.train_x.shape == (15, 3, 32, 32) and s.test_x.shape == (4, 3, 32, 32)
    want = torch.from_numpy(batches["test_batch"][0]).reshape(4, 3, 32, 32).float() / 255
    assert torch.equal(s.test_x, want)
    assert s.test_y.tolist() == batches["test_batch"][1]
    assert s.augment == "crop_flip" and s.pad == 4


def test_cifar_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cifar10 could not be loaded"):
        load_splits("cifar10", data_dir=str(tmp_path))


def test_validation_split_is_fixed_and_subsets_apply():
    a = load_splits("synthetic", train_subset=300, test_subset=50, val_size=60)
    b = load_splits("synthetic", train_subset=300, test_subset=50, val_size=60)
    assert torch.equal(a.val_x, b.val_x) and len(a.train_x) == 240 and len(a.test_x) == 50


def test_device_augmentation_matches_a_manual_crop_and_flip():
    x = torch.rand(6, 3, 8, 8)
    dy, dx, flip = sample_views(6, "crop_flip", 2, "cpu")
    out = apply_views(x, dy, dx, flip, 2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        ref = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        ref = ref.flip(-1) if flip[i] else ref
        assert torch.equal(out[i], ref)
    centre = apply_views(x, torch.full((6,), 2), torch.full((6,), 2), torch.zeros(6, dtype=torch.bool), 2)
    assert torch.equal(centre, x)
