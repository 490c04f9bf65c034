"""The soft-label cache is exact: cached logits equal a live teacher forward on the same view (fp16)."""
import pytest
import torch

from rslad_tune.teachers import soft_labels
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.data import apply_views, load_splits, num_views, sample_views, view_ids
from rslad_tune.trial.models import build_model
from rslad_tune.trial.trainer import train_model


@pytest.mark.parametrize("dataset,augment", [("synthetic_cifar", "crop_flip"), ("synthetic_cifar", "crop"),
                                             ("synthetic", "none")])
def test_cached_logits_equal_a_live_teacher_on_the_same_view(tmp_path, dataset, augment):
    torch.manual_seed(1)
    cfg = TrialConfig(dataset=dataset, train_subset=80, test_subset=10, val_size=16, augment=augment)
    splits = load_splits(dataset, train_subset=80, test_subset=10, val_size=16, augment=augment)
    teacher = build_model("small_cnn", splits.in_channels, 10, 4).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so a wrong view would show
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    table = soft_labels.load_or_build(tmp_path, teacher, cfg, splits)
    assert table.shape == (64, num_views(splits.augment, splits.pad), 10) and table.dtype == torch.float16
    for _ in range(3):  # random images, random views
        idx = torch.randint(0, 64, (32,))
        views = sample_views(32, splits.augment, splits.pad, "cpu")
        x = splits.train_x[idx]
        if splits.augment != "none":
            x = apply_views(x, *views, splits.pad)
        with torch.no_grad():
            live = teacher(x)
        cached = table[idx, view_ids(*views, splits.augment, splits.pad)].float()
        assert torch.allclose(cached, live, rtol=1e-3, atol=1e-3 * live.abs().max().item())
    # the file is reused, not rebuilt
    path = soft_labels.cache_path(tmp_path, cfg, splits)
    again = soft_labels.load_or_build(tmp_path, None, cfg, splits)
    assert path.is_file() and torch.equal(again, table)


def test_training_with_the_cache_matches_the_live_teacher(tmp_path):
    common = dict(dataset="synthetic_cifar", train_subset=320, test_subset=32, val_size=64, arch="small_cnn", width=4,
                  batch_size=64, attack_steps=2, eval_steps=2, epochs=1, num_threads=1, method="rslad", teacher="t",
                  precision="fp32")  # fp32: under bf16 autocast the live teacher's logits are bf16, the table's fp32 -> fp16
    cfg = TrialConfig(**common)
    splits = load_splits("synthetic_cifar", train_subset=320, test_subset=32, val_size=64)
    teacher = build_model("small_cnn", 3, 10, 8).eval()
    table = soft_labels.load_or_build(tmp_path, teacher, cfg, splits)
    live = train_model(cfg, teacher, splits=splits)["history"][0]["train_loss"]
    cached = train_model(cfg, None, splits=splits, soft_labels=table)["history"][0]["train_loss"]
    assert cached == pytest.approx(live, rel=2e-3)  # same batches and views; fp16 teacher logits only


def _damage_table(path, kind, cfg, splits):
    from safetensors.torch import save_file

    if kind == "bytes changed":
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "other shape":  # a table of other data under this name, digest and all
        from rslad_tune.trial.files import save_tensors

        save_tensors({"logits": torch.zeros(3, 1, 10, dtype=torch.float16)}, path)
    elif kind == "no digest":  # written by an older version
        save_file({"logits": soft_labels.read_cache(path, splits).cpu()}, str(path))


@pytest.mark.parametrize("kind,says", [("bytes changed", "sha256"), ("truncated", "not a readable"),
                                       ("empty", "not a readable"), ("other shape", "(3, 1, 10)"),
                                       ("no digest", "no digest")])
def test_a_bad_cache_is_reported_in_one_line_and_rebuilt(tmp_path, kind, says):
    cfg = TrialConfig(dataset="synthetic", train_subset=80, test_subset=10, val_size=16)
    splits = load_splits("synthetic", train_subset=80, test_subset=10, val_size=16)
    teacher = build_model("small_cnn", 1, 10, 4).eval()
    table = soft_labels.load_or_build(tmp_path, teacher, cfg, splits)
    path = soft_labels.cache_path(tmp_path, cfg, splits)
    _damage_table(path, kind, cfg, splits)
    logs = []
    again = soft_labels.load_or_build(tmp_path, teacher, cfg, splits, log=logs.append)
    assert torch.equal(again, table)
    bad = [line for line in logs if "rebuilding" in line]
    assert len(bad) == 1 and str(path) in bad[0] and says in bad[0], logs
    assert torch.equal(soft_labels.read_cache(path, splits), table)  # the file on disk is sound again
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    _damage_table(path, kind, cfg, splits)
    with pytest.raises(FileNotFoundError, match="no usable soft-label cache"):  # a trial without a teacher to rebuild it
        soft_labels.load_or_build(tmp_path, None, cfg, splits, log=lambda s: None)


def test_the_cache_carries_its_shape_and_digest(tmp_path):
    from safetensors import safe_open

    from rslad_tune.trial.files import DIGEST_KEY, tensor_digest

    cfg = TrialConfig(dataset="synthetic", train_subset=80, test_subset=10, val_size=16)
    splits = load_splits("synthetic", train_subset=80, test_subset=10, val_size=16)
    table = soft_labels.load_or_build(tmp_path, build_model("small_cnn", 1, 10, 4), cfg, splits)
    with safe_open(str(soft_labels.cache_path(tmp_path, cfg, splits)), "pt") as f:
        meta = f.metadata()
    assert meta["shape"] == "64x1x10" and meta[DIGEST_KEY] == tensor_digest({"logits": table})


def test_the_cache_key_includes_the_images_and_the_data_dir(tmp_path):
    """Another data_dir, or the same one holding other images, reads another table (issue 27)."""
    import dataclasses

    cfg = TrialConfig(dataset="synthetic", train_subset=80, test_subset=10, val_size=16)
    splits = load_splits("synthetic", train_subset=80, test_subset=10, val_size=16)
    path = soft_labels.cache_path(tmp_path, cfg, splits)
    assert soft_labels.cache_path(tmp_path, cfg, splits) == path  # stable
    other = dataclasses.replace(splits, train_x=splits.train_x.clone())
    other.train_x[0, 0, 0, 0] += 0.5  # one pixel of one image changed
    assert soft_labels.cache_path(tmp_path, cfg, other) != path
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = soft_labels.cache_path(tmp_path, dataclasses.replace(cfg, data_dir=str(tmp_path / "a")), splits)
    b = soft_labels.cache_path(tmp_path, dataclasses.replace(cfg, data_dir=str(tmp_path / "b")), splits)
    assert a != b
