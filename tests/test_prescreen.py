"""tune: {prescreen: {by, keep}}: its parsing, the top-K selection, the narrowing of a sweep and the report's section."""
import copy
from pathlib import Path

import pytest
import yaml

from rslad_tune.sweep.prescreen import prescreen, top_k
from rslad_tune.sweep.report import _prescreened
from rslad_tune.sweep.spec import parse_sweep
from rslad_tune.trial.errors import SpecError

TRAINED = Path(__file__).resolve().parent / "data" / "trained_teachers.yaml"
PROXIES = "true_prob, clean_acc, nll, ece, entropy"


def _raw(prescreen=None, **tune) -> dict:
    raw = yaml.safe_load(TRAINED.read_text())  # two searched `train:` teachers
    raw["tune"] = {**raw["tune"], **tune, **({"prescreen": prescreen} if prescreen is not None else {})}
    return raw


def test_prescreen_parses_and_defaults_to_true_prob():
    assert (parse_sweep(_raw()).tune.prescreen_by, parse_sweep(_raw()).tune.prescreen_keep) == (None, None)
    t = parse_sweep(_raw({"by": "nll", "keep": 1})).tune
    assert (t.prescreen_by, t.prescreen_keep) == ("nll", 1)
    assert parse_sweep(_raw({"keep": 5})).tune.prescreen_by == "true_prob"  # keep > the 2 teachers: allowed, no warning


@pytest.mark.parametrize("entry,message", [
    ({"by": "accuracy", "keep": 1}, f"tune.prescreen.by: 'accuracy' is not allowed; must be one of the proxies {PROXIES}"),
    ({"by": "nll", "keep": 0}, "tune.prescreen.keep: 0 is not allowed; must be >= 1: keep 0 would drop every teacher"),
    ({"by": "nll", "keep": 1.5}, "tune.prescreen.keep: 1.5 is not allowed; must be an integer >= 1"),
    ({"by": "nll", "keep": True}, "tune.prescreen.keep: True is not allowed; must be an integer >= 1"),
    ({"by": "nll", "keep": 1, "top": 2}, "tune.prescreen.top: 2 is not allowed; unknown key"),
    ({"by": "nll"}, "tune.prescreen.keep: None is not allowed; required"),
    (3, "tune.prescreen: 3 is not allowed; must be a mapping"),
])
def test_bad_prescreen_entries_are_one_line_errors(entry, message):
    with pytest.raises(SpecError) as err:
        parse_sweep(_raw(entry), path="space.yaml")
    assert str(err.value).startswith(f"space.yaml: {message}") and "\n" not in str(err.value), str(err.value)


def test_prescreen_needs_a_searched_teacher():
    raw = _raw({"keep": 1})
    del raw["search"]["teacher"]
    raw["trial"]["teacher"] = "sat_w16"
    with pytest.raises(SpecError, match=r"^tune\.prescreen: .*needs search\.teacher"):
        parse_sweep(raw)
    parse_sweep(copy.deepcopy(_raw({"keep": 1})), overrides={"teacher": "sat_w16"})  # --set teacher=...: nothing to screen


VALUES = {"none": None, "a": 0.70, "b": 0.90, "labels": 0.99, "c": 0.80, "d": None}


@pytest.mark.parametrize("by,keep,kept", [
    ("true_prob", 2, ["none", "b", "labels", "c"]),   # higher is better: b, c
    ("nll", 2, ["none", "a", "labels", "c"]),         # lower is better: a, c
    ("true_prob", 1, ["none", "b", "labels"]),
    ("ece", 3, ["none", "a", "b", "labels", "c"]),
    ("true_prob", 9, list(VALUES)),                   # more than there are: all kept
])
def test_top_k_keeps_the_k_best_in_the_proxys_direction_and_the_references(by, keep, kept):
    got, dropped = top_k(VALUES, by, keep, controls={"none", "labels"})
    assert got == kept and dropped == [n for n in VALUES if n not in kept]


def test_prescreen_narrows_the_searched_teachers_and_says_which_it_dropped(tmp_path):
    from rslad_tune.teachers.source import TeacherSpec
    from rslad_tune.teachers.sources import SOURCES, read_teacher
    from rslad_tune.trial.files import write_json

    spec = parse_sweep(_raw({"by": "nll", "keep": 1}))
    base = SOURCES["baseline"].resolve(TeacherSpec("base", "baseline", {"method": "sat"}), spec.trial, tmp_path, log=lambda s: None)
    dirs = {"base": read_teacher("base", base, "baseline")}
    for name in ("sat_w16", "sat_w24"):
        (tmp_path / name).mkdir()
        write_json({"arch": "small_cnn"}, tmp_path / name / "config.json")
        dirs[name] = read_teacher(name, tmp_path / name, "checkpoint")
    spec.search["teacher"].args.append("base")
    proxies = {"base": None, "sat_w16": {"training": dict.fromkeys(PROXIES.split(", "), 0.4)},
               "sat_w24": {"training": dict.fromkeys(PROXIES.split(", "), 0.3)}}
    lines = []
    record = prescreen(spec, dirs, proxies, lines.append)
    assert spec.search["teacher"].args == ["sat_w24", "base"] and set(dirs) == {"sat_w24", "base"}
    assert record["kept"] == ["sat_w24", "base"] and record["dropped"] == ["sat_w16"]
    assert record["teachers"]["sat_w16"] == {"kept": False, "control": False, **proxies["sat_w16"]["training"]}
    assert record["teachers"]["base"]["control"] and record["teachers"]["base"]["nll"] is None
    (line,) = lines
    assert "dropped sat_w16 (nll 0.4000)" in line and "base: reference, always kept" in line
    md = "\n".join(_prescreened(record))
    assert "by nll, keep 1" in md and "| sat_w16 | 0.4000 | 0.4000 | 0.4000 | 0.4000 | 0.4000 |" in md
    assert _prescreened(None) == [] and _prescreened({**record, "dropped": []}) == []


def test_the_prescreen_is_recorded_as_parent_params():
    from rslad_tune.sweep.tuning import _parent_params

    assert not {k for k in _parent_params(parse_sweep(_raw())) if "prescreen" in k}
    params = _parent_params(parse_sweep(_raw({"by": "ece", "keep": 1})))
    assert (params["prescreen_by"], params["prescreen_keep"]) == ("ece", 1)


def test_the_num_samples_warning_counts_the_teachers_after_the_prescreen():
    from rslad_tune.sweep.preflight import _check_schedule

    raw = yaml.safe_load((TRAINED.parents[2] / "search_spaces" / "teacher.yaml").read_text())  # 6 zoo teachers + none
    raw["tune"]["num_samples"] = 4
    assert any("fewer than the 7 teachers searched:" in w for w in _check_schedule(parse_sweep(raw)))
    raw["tune"]["prescreen"] = {"keep": 3}  # 3 and the baseline
    assert not any("num_samples" in w for w in _check_schedule(parse_sweep(raw)))
    raw["tune"]["num_samples"] = 3
    assert any("fewer than the 4 teachers searched after the prescreen" in w for w in _check_schedule(parse_sweep(raw)))


@pytest.mark.slow  # a whole Ray sweep (~30 s); the prescreen's choice and records are unit-tested above
def test_a_sweep_prescreens_before_any_trial_and_records_it(tmp_path):
    """One tiny Ray sweep (two 1-epoch trials): three weights-file teachers and the baseline, keep 1 by true_prob."""
    import json
    import os
    import subprocess
    import sys

    import torch
    from mlflow.tracking import MlflowClient

    from rslad_tune.trial.files import save_weights
    from rslad_tune.trial.models import build_model

    teachers = {"none": {"baseline": "sat"}}
    for seed, name in enumerate(("a", "b", "c")):
        torch.manual_seed(seed)
        save_weights(build_model("small_cnn", 1, 10, 4), tmp_path / f"{name}.safetensors")
        teachers[name] = {"checkpoint": f"{name}.safetensors", "arch": "small_cnn", "width": 4, "card_aa_examples": 0}
    space = {"experiment": "pre", "runs_dir": str(tmp_path / "runs"), "teachers": teachers,
             "data": {"dataset": "synthetic", "train_subset": 200, "test_subset": 40, "val_size": 40},
             "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1, "eval_steps": 2,
                       "batch_size": 50},
             "search": {"teacher": {"choice": ["a", "b", "none", "c"]}, "alpha": {"uniform": [0.5, 1.0]}},
             "tune": {"num_samples": 2, "max_concurrent": 2, "scheduler": {"type": "fifo"}, "resources": {"cpu": 1},
                      "prescreen": {"by": "true_prob", "keep": 1}},
             "report": {"n_examples": 40, "n_aa": 0}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    proc = subprocess.run([sys.executable, "-m", "rslad_tune.cli", "--space", str(tmp_path / "space.yaml"), "--no-export"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(TRAINED.parents[2])})  # this checkout, not an installed one
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "runs" / "pre"
    sweep = json.loads((exp / "sweep.json").read_text())
    record, dirs = sweep["prescreen"], sweep["teacher_dirs"]
    values = {n: record["teachers"][n]["true_prob"] for n in "abc"}
    best = max(values, key=values.get)
    assert record["kept"] == [n for n in ["a", "b", "none", "c"] if n in (best, "none")] and set(dirs) == {best, "none"}
    assert sorted(record["dropped"]) == sorted(set("abc") - {best})
    cards = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "teachers").glob("file-*/card.json")]
    assert len(cards) == 3 and all(next(iter(c["proxies"].values()))["training"]["n"] == 160 for c in cards)  # kept or not
    (line,) = [x for x in proc.stdout.splitlines() if "prescreen by true_prob" in x]
    assert all(f"{n} (true_prob {values[n]:.4f})" in line for n in record["dropped"])
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    parent = client.get_run(sweep["parent_run_id"])
    assert (parent.data.params["prescreen_by"], parent.data.params["prescreen_keep"]) == ("true_prob", "1")
    art = client.download_artifacts(parent.info.run_id, "prescreen.json", str(tmp_path / "artifacts"))
    assert json.loads(Path(art).read_text()) == record
    children = client.search_runs([parent.info.experiment_id], "tags.`rslad_tune.kind` = 'trial'")
    assert {c.data.params["teacher"] for c in children} == {best, "none"}  # no dropped teacher trained a student
    md = (exp / "selection.md").read_text()
    assert "Prescreened out before any trial (tune.prescreen: by true_prob, keep 1" in md
    assert all(f"| {n} | {values[n]:.4f} |" in md for n in record["dropped"])
