"""The paper's evaluation suite: FGSM / CW attacks, `evaluate_suite` (AutoAttack included), `rslad-tune evaluate`."""
import json
import shutil

import pytest
import torch
from torch import nn

from rslad_tune.cli import main
from rslad_tune.trial.attacks import ce_loss, cw_loss, fgsm, pgd
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.robustness import COLUMNS, evaluate_suite, suite_protocol
from rslad_tune.trial.trainer import train_model

TINY = dict(dataset="synthetic", train_subset=2000, test_subset=100, val_size=128, arch="small_cnn", width=4,
            batch_size=64, lr=0.05, attack_steps=2, eval_steps=2, epsilon=0.05, eval_epsilon=0.05, num_threads=1,
            device="cpu")
TOL = 0.005  # half a point


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()


def _edge_images(n=64):
    x = torch.rand(n, 3, 8, 8)
    x[:8] = 0.0  # images on the box edges: the clipping must respect [0, 1]
    x[8:16] = 1.0
    return x


@pytest.fixture(scope="module")
def sat_ckpt(tmp_path_factory):
    """A tiny SAT student (3 epochs, ~7 s), checkpointed like a trial (model/best.safetensors + trial.json).

    Trained at eps 0.05 on the synthetic templates: at eval eps 0.05 its accuracies spread out (clean 100 %,
    FGSM ~78 %, PGD ~53 % on 200 images); at 0.04 some images survive every AutoAttack attack.
    """
    torch.set_num_threads(1)
    ckpt = tmp_path_factory.mktemp("sat") / "ckpt"
    cfg = TrialConfig(method="sat", epochs=3, **TINY)
    r = train_model(cfg, checkpoint_dir=ckpt)
    r["model"].zero_grad(set_to_none=True)  # the last training step leaves .grad behind
    return {"cfg": cfg, "dir": ckpt, "model": r["model"].eval(), "splits": r["splits"]}


# --------------------------------------------------------------------------- attacks


def test_fgsm_takes_one_full_signed_step_inside_ball_and_box():
    model, x, y, eps = _linear(), _edge_images(), torch.randint(0, 10, (64,)), 8 / 255
    x_adv = fgsm(model, x, ce_loss(y), eps)
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    inner = (x > eps) & (x < 1 - eps)  # away from the box every pixel moves by exactly eps
    assert torch.allclose((x_adv - x).abs()[inner], torch.full_like(x[inner], eps), atol=1e-6)
    with torch.no_grad():
        assert ce_loss(y)(model(x_adv)) > ce_loss(y)(model(x)) * 1.05


def test_cw_loss_is_the_summed_margin_and_pgd_on_it_stays_inside():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 1.0]])
    y = torch.tensor([0, 2])
    # image 0: max other 1 - 2 = -1; image 1: max other 3 - 1 = 2
    assert cw_loss(y)(logits).item() == pytest.approx(1.0)
    model, x, y, eps = _linear(), _edge_images(), torch.randint(0, 10, (64,)), 8 / 255
    x_adv = pgd(model, x, cw_loss(y), eps, eps / 4, 10, "uniform")
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert cw_loss(y)(model(x_adv)) > cw_loss(y)(model(x)) + 1.0


def test_step_sizes_are_the_papers_at_8_255_and_scale_with_eps():
    p = suite_protocol(8 / 255)
    assert p["PGD_SAT"] == {"loss": "ce", "steps": 20, "step_size": pytest.approx(2 / 255), "start": "uniform"}
    assert p["PGD_TRADES"] == {"loss": "ce", "steps": 20, "step_size": pytest.approx(0.003), "start": "uniform"}  # as TRADES evaluates
    assert p["CW_inf"] == {"loss": "cw", "steps": 30, "step_size": pytest.approx(2 / 255), "start": "uniform"}
    assert p["FGSM"]["steps"] == 1 and p["FGSM"]["step_size"] == pytest.approx(8 / 255)
    q = suite_protocol(16 / 255)
    for col in ("FGSM", "PGD_SAT", "PGD_TRADES", "CW_inf"):
        assert q[col]["step_size"] == pytest.approx(2 * p[col]["step_size"])


# --------------------------------------------------------------------------- the suite


def test_suite_orders_the_attacks_and_leaves_the_model_as_it_was(sat_ckpt):
    model, s = sat_ckpt["model"], sat_ckpt["splits"]
    model.train()
    res = evaluate_suite(model, s.test_x, s.test_y, 0.05, attacks=COLUMNS[:-1], batch_size=50, progress=None)
    assert list(res) == ["Clean", "FGSM", "PGD_SAT", "PGD_TRADES", "CW_inf"]
    assert res["Clean"] > 0.3  # learnt something (chance 0.1)
    assert res["FGSM"] <= res["Clean"] + TOL
    assert res["PGD_SAT"] <= res["FGSM"] + TOL
    assert res["PGD_TRADES"] <= res["FGSM"] + TOL
    assert res["CW_inf"] <= res["Clean"] + TOL
    assert res["PGD_SAT"] < res["Clean"] - 0.2 and res["PGD_SAT"] > 0.1  # neither trivial nor all broken
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    again = evaluate_suite(model, s.test_x, s.test_y, 0.05, attacks=["pgd_sat"], batch_size=50, progress=None)
    assert again["PGD_SAT"] == res["PGD_SAT"]  # seeded per column


def _spy_autoattack(monkeypatch):
    from pyautoattack import AutoAttack

    calls = []
    original = AutoAttack.run_standard_evaluation

    def spy(self, x, y, **kw):
        calls.append((len(x), self.version, self.norm, self.epsilon, list(self.attacks_to_run)))
        return original(self, x, y, **kw)

    monkeypatch.setattr(AutoAttack, "run_standard_evaluation", spy)
    return calls


def test_autoattack_runs_through_pyautoattack_and_is_no_weaker_than_pgd(sat_ckpt, monkeypatch):
    calls = _spy_autoattack(monkeypatch)
    monkeypatch.setattr("rslad_tune.trial.robustness.AA_CHUNK", 5)
    model, s = sat_ckpt["model"], sat_ckpt["splits"]
    x, y = s.test_x[:10], s.test_y[:10]  # (two chunks of 5: AutoAttack's cost is per image, ~0.6 s here)
    lines = []
    res = evaluate_suite(model, x, y, 0.06, n_aa=10, attacks=["clean", "pgd_sat", "aa"], progress=lines.append)
    assert calls == [(5, "standard", "Linf", 0.06, ["apgd-ce", "apgd-t", "fab-t", "square"])] * 2
    assert res["PGD_SAT"] > 0  # PGD leaves something for AutoAttack to break
    assert res["AA"] <= res["PGD_SAT"] + TOL
    chunk_lines = [ln for ln in lines if ln.startswith(("AA 5/10 images", "AA 10/10 images"))]
    assert len(chunk_lines) == 2 and all("img/s" in ln and "ETA" in ln and "robust accuracy so far" in ln
                                         for ln in chunk_lines)
    assert any(ln.startswith("AA   images 6-10: robust accuracy after APGD-CE") for ln in lines)
    assert all(p.grad is None for p in model.parameters())
    import logging

    assert logging.getLogger("auto-attack").propagate and not logging.getLogger("auto-attack").handlers


@pytest.mark.slow  # AutoAttack's four attacks on surviving points (~12 s); the fast suite keeps the no-weaker-than-PGD check
def test_autoattack_runs_all_four_attacks_when_points_survive(sat_ckpt, monkeypatch):
    """~10 s: at eps 0.04 some images survive APGD, so FAB-T and Square (5000 queries) run too."""
    _spy_autoattack(monkeypatch)
    model, s = sat_ckpt["model"], sat_ckpt["splits"]
    lines = []
    res = evaluate_suite(model, s.test_x[:16], s.test_y[:16], 0.04, n_aa=16, attacks=["pgd_sat", "cw_inf", "aa"],
                         progress=lines.append)
    assert res["AA"] > 0 and res["AA"] <= min(res["PGD_SAT"], res["CW_inf"]) + TOL
    for attack in ("APGD-CE", "APGD-T", "FAB-T", "SQUARE"):
        assert any(f"robust accuracy after {attack}:" in ln for ln in lines), attack


def test_a_naturally_trained_model_is_not_robust():
    cfg = TrialConfig(method="natural", epochs=3, **TINY)
    r = train_model(cfg)
    s = r["splits"]
    res = evaluate_suite(r["model"], s.test_x, s.test_y, 0.05, attacks=["clean", "fgsm", "pgd_sat"], progress=None)
    assert res["Clean"] > 0.6
    assert res["PGD_SAT"] < res["Clean"] - 0.5, res


# --------------------------------------------------------------------------- `rslad-tune evaluate`


def test_evaluate_cli_on_a_trial_checkpoint_reports_best_and_last(sat_ckpt, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(sat_ckpt["dir"], ckpt)
    assert main(["evaluate", str(ckpt), "--n-examples", "40", "--n-aa", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("checkpoint  epoch"):].splitlines()
    assert table[0].split() == ["checkpoint", "epoch", *COLUMNS]
    best, last = table[1].split(), table[2].split()
    assert best[0] == "best" and last[0] == "last" and last[1] == "3"
    assert all(0 <= float(v) <= 100 and len(v.split(".")[1]) == 2 for v in best[2:] + last[2:])
    rep = json.loads((ckpt / "eval.json").read_text())
    assert rep["n"] == 40 and rep["n_aa"] == 4 and rep["eps"] == 0.05 and rep["kind"] == "checkpoint"
    assert set(rep["rows"]) == {"best", "last"}
    for row in rep["rows"].values():
        assert set(COLUMNS) <= set(row) and all(0 <= row[c] <= 1 for c in COLUMNS)
    assert rep["rows"]["last"]["Clean"] == pytest.approx(float(last[2]) / 100, abs=1e-4)
    assert "AA 4/4 images" in out
    assert not list(ckpt.glob(".*tmp"))  # the atomic write left no temporary file


def test_evaluate_cli_on_an_export_folder_logs_to_its_mlflow_run(sat_ckpt, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from rslad_tune.trial.models import model_config

    cfg, s = sat_ckpt["cfg"], sat_ckpt["splits"]
    exp = tmp_path / "runs" / "exp"
    best = exp / "best"
    best.mkdir(parents=True)
    shutil.copyfile(sat_ckpt["dir"] / "best.safetensors", best / "model.safetensors")
    mcfg = model_config(cfg.arch, cfg.width, s.in_channels, s.num_classes, s.image_size)
    (best / "config.json").write_text(json.dumps({**mcfg, "trial": cfg.to_dict(), "source": str(sat_ckpt["dir"])}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("exp")).info.run_id
    (best / "metrics.json").write_text(json.dumps({"epoch": 2, "mlflow_run_id": run_id}))
    (exp / "sweep.json").write_text(json.dumps({"tracking_uri": uri}))
    out_file = tmp_path / "e.json"
    # the sweep's store is not the runs root's default: named by --tracking-uri (a URI in sweep.json alone is not used)
    assert main(["evaluate", str(exp), "--n-examples", "30", "--attacks", "clean,FGSM", "--out", str(out_file),
                 "--tracking-uri", uri]) == 0
    rep = json.loads(out_file.read_text())
    assert rep["kind"] == "export" and set(rep["rows"]) == {"best", "last"} and rep["rows"]["best"]["epoch"] == 2
    assert set(rep["rows"]["best"]) == {"epoch", "weights", "Clean", "FGSM"}
    metrics = client.get_run(run_id).data.metrics
    assert metrics["eval_Clean"] == pytest.approx(rep["rows"]["best"]["Clean"])
    assert metrics["eval_last_FGSM"] == pytest.approx(rep["rows"]["last"]["FGSM"])
    assert "eval_AA" not in metrics


def test_evaluate_cli_rejects_bad_input_with_one_line(sat_ckpt, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty")]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert main(["evaluate", str(sat_ckpt["dir"]), "--attacks", "clean,pgd50"]) == 2
    assert "--attacks" in capsys.readouterr().err


def test_pgd_trades_starts_uniformly_in_the_eps_ball(monkeypatch):
    """PGD_TRADES as TRADES evaluates it: a uniform start in the eps-ball (not x + 0.001 N(0, 1)), step 0.003 at 8/255."""
    import rslad_tune.trial.robustness as rob
    from rslad_tune.trial.attacks import random_start

    eps = 8 / 255
    seen = {}

    def spy(model, x, loss_fn, e, step_size, steps, start):
        seen.update(step=step_size, steps=steps, delta=(random_start(x, e, start) - x))
        return x

    monkeypatch.setattr(rob, "pgd", spy)
    x = torch.full((200, 1, 8, 8), 0.5)  # away from the box, so clipping does not shape the start
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    evaluate_suite(model, x, torch.zeros(200, dtype=torch.long), eps, attacks=["PGD_TRADES"], progress=None)
    d = seen["delta"].flatten()
    assert seen["steps"] == 20 and seen["step"] == pytest.approx(0.003)
    assert d.abs().max() <= eps + 1e-7 and d.abs().max() > 0.95 * eps       # fills the ball, never leaves it
    assert d.std().item() == pytest.approx(eps / 3 ** 0.5, rel=0.05)          # uniform: std = eps / sqrt(3)
    assert abs(d.mean().item()) < 0.02 * eps
