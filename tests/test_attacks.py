import torch
from torch import nn

from rslad_tune.trial.attacks import ce_loss, kl_loss, pgd


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    with torch.no_grad():  # sharper than the default init, so that an eps-step moves the loss visibly
        for p in model.parameters():
            p.mul_(8)
    return model


def test_pgd_stays_in_ball_and_box_and_raises_ce():
    model = _model()
    x = torch.rand(64, 3, 8, 8)
    x[:8] = 0.0  # images at the box edges: the projection must respect [0, 1]
    x[8:16] = 1.0
    y = torch.randint(0, 10, (64,))
    eps = 8 / 255
    for start in ("uniform", "normal", "none"):
        x_adv = pgd(model, x, ce_loss(y), eps, 2 / 255, 10, start)
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            noise = (x + eps * torch.randn_like(x).sign()).clamp(0, 1)  # a random corner of the same ball
            assert ce_loss(y)(model(x_adv)) > 1.2 * ce_loss(y)(model(noise))


def test_pgd_raises_kl_to_teacher_probabilities():
    model = _model()
    x = torch.rand(32, 3, 8, 8)
    with torch.no_grad():
        target = torch.softmax(model(x), 1)  # zero KL at x: any increase comes from the attack
    x_adv = pgd(model, x, kl_loss(target), 0.05, 0.0125, 10, "normal")
    with torch.no_grad():
        assert kl_loss(target)(model(x_adv)) > kl_loss(target)(model(x)) + 1e-3
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6


def test_pgd_leaves_model_parameters_without_grad():
    model = _model()
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 10, (8,))
    pgd(model, x, ce_loss(y), 0.03, 0.01, 3)
    assert all(p.grad is None for p in model.parameters())


def test_scoring_an_attack_shows_a_progress_bar_and_validation_does_not(capsys, monkeypatch):
    """export's and report's test-split attacks show progress (images, rate, ETA) on stderr; a trial's per-epoch
    validation (no log) stays silent."""
    from rslad_tune.trial.models import build_model
    from rslad_tune.trial.robustness import clean_and_pgd, evaluate_suite
    from rslad_tune.trial.scoring import score

    monkeypatch.setenv("RSLAD_TUNE_PROGRESS", "1")
    model = build_model("small_cnn", 1, 10, 4).eval()
    x, y = torch.rand(40, 1, 28, 28), torch.arange(40) % 10
    clean_and_pgd(model, x, y, 0.1, 0.05, 2)
    assert capsys.readouterr().err == ""
    score(model, x, y, 0.1, ["Clean", "PGD-2@0.05"], log=lambda s: None, batch_size=16)
    err = capsys.readouterr().err
    assert "PGD-2@0.05" in err and "40/40" in err and "img" in err
    evaluate_suite(model, x, y, 0.1, attacks=["PGD_SAT"], n_aa=0, progress=lambda s: None)
    assert "PGD_SAT" in capsys.readouterr().err
