"""Reference arms (a `baseline:` teacher by default, any entry with `reference: true`): ASHA never stops them early and,
unless `tune.reference_in_rungs: true`, their results do not enter its rungs; every other trial is still ASHA's."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from rslad_tune.sweep.scheduling import ReferenceASHA, make_scheduler, rungs
from rslad_tune.sweep.spec import parse_sweep
from rslad_tune.sweep.tuning import teacher_points

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE


def _space(**tune) -> dict:
    return {
        "experiment": "ref",
        "data": {"dataset": "synthetic", "train_subset": 600, "test_subset": 100, "val_size": 100},
        "teachers": {"good": {"labels": {}},
                     "weak": {"checkpoint": "random.safetensors", "arch": "small_cnn", "width": 4, "reference": True,
                              "card_examples": 50, "card_aa_examples": 0},
                     "bad": {"checkpoint": "random.safetensors", "arch": "small_cnn", "width": 4,
                             "card_examples": 50, "card_aa_examples": 0},
                     "none": {"baseline": "sat"}},
        "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 2, "attack_steps": 1, "eval_steps": 2,
                  "batch_size": 32, "lr": 0.1, "epsilon": 0.05, "eval_epsilon": 0.05},
        "search": {"teacher": {"choice": ["good", "weak", "bad", "none"]}, "alpha": {"uniform": [0.5, 1.0]}},
        "report": {"n_examples": 20, "n_aa": 0},
        "tune": {"num_samples": 4, "max_concurrent": 1, "scheduler": {"grace_period": 1, "reduction_factor": 2},
                 "resources": {"cpu": 1}, **tune},
    }


def test_a_baseline_is_a_reference_by_default_and_any_entry_can_be_one():
    spec = parse_sweep(_space())
    assert spec.references == {"none", "weak"}  # none: the baseline source's default; weak: reference: true
    raw = _space()
    raw["teachers"]["none"]["reference"] = False
    assert parse_sweep(raw).references == {"weak"}
    assert not parse_sweep(_space()).tune.reference_in_rungs
    assert parse_sweep(_space(reference_in_rungs=True)).tune.reference_in_rungs


def _trial(tid: str, teacher: str):
    return SimpleNamespace(trial_id=tid, config={"teacher": teacher})


def _asha() -> AsyncHyperBandScheduler:
    asha = AsyncHyperBandScheduler(time_attr="training_iteration", max_t=4, grace_period=1, reduction_factor=2)
    asha.set_search_properties("pgd_acc", "max")
    return asha


def _report(scheduler, trial, epoch: int, value: float) -> str:
    return scheduler.on_trial_result(None, trial, {"training_iteration": epoch, "pgd_acc": value})


@pytest.mark.parametrize("in_rungs", [False, True])
def test_the_scheduler_never_stops_a_reference_and_keeps_it_out_of_the_rungs_unless_asked(in_rungs):
    s = ReferenceASHA(_asha(), {"none"}, in_rungs=in_rungs)
    base, a, b, c = _trial("base", "none"), _trial("a", "t1"), _trial("b", "t2"), _trial("c", "t3")
    for t in (base, a, b, c):
        s.on_trial_add(None, t)
    # the baseline is the worst at every rung, and never stopped
    assert _report(s, base, 1, 0.25) == CONTINUE
    assert _report(s, a, 1, 0.75) == CONTINUE  # the first teacher at the rung
    # c at 0.5: out of the rungs the baseline leaves the cutoff at a's 0.75 (stop); in them, the median of 0.25 and
    # 0.75 is 0.5 (c continues): a reference counts against the other trials only when asked
    assert _report(s, c, 1, 0.5) == (CONTINUE if in_rungs else STOP)
    assert _report(s, b, 1, 0.125) == STOP  # a teacher's student below the cutoff is still stopped
    for epoch in (2, 3):
        assert _report(s, base, epoch, 0.0) == CONTINUE
    assert ("base" in s.asha._trial_info) == in_rungs
    s.on_trial_complete(None, base, {"training_iteration": 4, "pgd_acc": 0.2})  # no KeyError either way
    s.on_trial_remove(None, b)
    assert "b" not in s.asha._trial_info


def test_plain_asha_would_have_stopped_that_baseline():
    """The case the wrapper exists for: Ray's ASHA alone stops the baseline that is worst at the first rung."""
    asha = _asha()
    for t in (_trial("a", "t1"), _trial("base", "none")):
        asha.on_trial_add(None, t)
    assert _report(asha, _trial("a", "t1"), 1, 0.50) == CONTINUE
    assert _report(asha, _trial("base", "none"), 1, 0.10) == STOP


def test_the_scheduler_of_a_sweep_and_its_rungs():
    spec = parse_sweep(_space())
    s = make_scheduler(spec)
    assert isinstance(s, ReferenceASHA) and s.references == {"none", "weak"} and not s.in_rungs
    assert rungs(spec) == [1]  # epochs 2, grace 1: ASHA decides at epoch 1 (at 2 every trial ends)
    raw = _space(scheduler={"grace_period": 1, "reduction_factor": 2})
    raw["trial"]["epochs"] = 8
    assert rungs(parse_sweep(raw)) == [1, 2, 4]
    raw["teachers"] = {"good": raw["teachers"]["good"]}
    raw["search"]["teacher"] = {"choice": ["good"]}
    assert type(make_scheduler(parse_sweep(raw))) is AsyncHyperBandScheduler  # no reference: Ray's ASHA as it is
    assert rungs(parse_sweep(_space(scheduler={"type": "fifo"}))) == []


def test_with_fewer_samples_than_teachers_the_references_are_still_tried_at_the_centre():
    spec = parse_sweep(_space(num_samples=2))
    assert [p["teacher"] for p in teacher_points(spec)] == ["weak", "none"]
    assert {p["alpha"] for p in teacher_points(spec)} == {0.75}
    assert [p["teacher"] for p in teacher_points(parse_sweep(_space()))] == ["good", "weak", "bad", "none"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """good (the true labels) reaches the first rung first; weak and bad distil from the same random network, the
    same run twice: weak is a reference, bad is not. Trials one at a time, in the YAML's order."""
    import torch

    from rslad_tune.trial.files import save_weights
    from rslad_tune.trial.models import build_model

    d = tmp_path_factory.mktemp("reference")
    torch.manual_seed(1)
    save_weights(build_model("small_cnn", 1, 10, 4), d / "random.safetensors")
    (d / "space.yaml").write_text(yaml.safe_dump(dict(_space(), runs_dir=str(d / "runs"))))
    proc = subprocess.run([sys.executable, "-m", "rslad_tune.cli", "--space", str(d / "space.yaml")],
                          cwd=d, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from rslad_tune.sweep.layout import ExperimentDir

    exp = ExperimentDir.open(d / "runs" / "ref")
    return exp, {t.config["teacher"]: [h["pgd_acc"] for h in t.history] for t in exp.trials()}, proc.stdout


def test_a_reference_worst_at_the_first_rung_trains_every_epoch(sweep):
    exp, curves, _ = sweep
    assert set(curves) == {"good", "weak", "bad", "none"}
    first = {t: c[0] for t, c in curves.items()}
    # the worst at the rung (bad is the same run), behind good, the first there: Ray's ASHA alone would stop it
    assert first["weak"] < first["good"] and first["weak"] <= min(first["good"], first["none"]), first
    assert len(curves["weak"]) == 2 and len(curves["none"]) == 2 and len(curves["good"]) == 2, curves
    assert exp.sweep["rungs"] == [1] and exp.sweep["references"] == ["none", "weak"]


def test_a_trial_that_is_no_reference_is_still_stopped(sweep):
    _, curves, _ = sweep
    assert len(curves["bad"]) == 1 and curves["bad"][0] < curves["good"][0], curves  # stopped at the rung


def test_the_report_answers_should_i_distil_and_draws_the_curves_with_the_rungs(sweep):
    exp, _, out = sweep
    md = (exp.path / "selection.md").read_text()
    assert md.startswith("**Cannot tell whether to distil: one student each, no interval.** The best teacher, good, "
                         "minus the student trained alone (none; 1 seed): +"), md[:300]
    assert "ASHA stopped every student trained alone" not in md
    assert (exp.path / "selection_curves.png").stat().st_size > 10_000
    assert "selection_curves.png" in out
