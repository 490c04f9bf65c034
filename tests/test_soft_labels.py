"""The soft-label cache is exact: cached logits equal a live teacher forward on the same view (fp16)."""
import pytest
import torch

from rslad_tune import soft_labels
from rslad_tune.data import apply_views, load_splits, num_views, sample_views, view_ids
from rslad_tune.models import build_model
from rslad_tune.spec import TrialConfig
from rslad_tune.trainer import train_model


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
                  batch_size=64, attack_steps=2, eval_steps=2, epochs=1, num_threads=1, method="rslad", teacher="t")
    cfg = TrialConfig(**common)
    splits = load_splits("synthetic_cifar", train_subset=320, test_subset=32, val_size=64)
    teacher = build_model("small_cnn", 3, 10, 8).eval()
    table = soft_labels.load_or_build(tmp_path, teacher, cfg, splits)
    live = train_model(cfg, teacher, splits=splits)["history"][0]["train_loss"]
    cached = train_model(cfg, None, splits=splits, soft_labels=table)["history"][0]["train_loss"]
    assert cached == pytest.approx(live, rel=2e-3)  # same batches and views; fp16 teacher logits only
