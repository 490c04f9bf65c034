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
    from rslad_tune.teachers.sources import SOURCES
    from rslad_tune.trial.files import write_json

    spec = parse_sweep(_raw({"by": "nll", "keep": 1}))
    dirs = {"base": str(SOURCES["baseline"].resolve(TeacherSpec("base", "baseline", {"method": "sat"}), spec.trial,
                                                    tmp_path, log=lambda s: None))}
    for name in ("sat_w16", "sat_w24"):
        (tmp_path / name).mkdir()
        write_json({"arch": "small_cnn"}, tmp_path / name / "config.json")
        dirs[name] = str(tmp_path / name)
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
