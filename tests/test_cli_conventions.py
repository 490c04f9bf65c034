"""What a Ray Tune / MLflow user expects of a command line: --version, a fast --help that imports nothing heavy,
a did-you-mean for a mistyped verb, `--set section.key=value` for every section of the YAML, $MLFLOW_TRACKING_URI,
`python -m rslad_tune`, `zoo list --json` and shell completion."""
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rslad_tune.cli import main
from rslad_tune.sweep.spec import load_sweep, parse_set_overrides
from rslad_tune.sweep.stores import choose_store, choose_tracking_uri
from rslad_tune.trial.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"
HEAVY = ("torch", "ray", "mlflow", "optuna", "matplotlib")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _run(argv, capsys):
    """main(argv) -> (exit status, stdout, stderr); argparse's exits count as the status."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc, err):
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("rslad-tune: error: ") and "Traceback" not in err, err
    return err.strip()


def _pyproject_version():
    return re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)


# --------------------------------------------------------------------------- 1. --version


def test_version_prints_the_name_and_the_installed_version(capsys):
    from importlib import metadata

    try:
        expected = metadata.version("rslad-tune")
    except metadata.PackageNotFoundError:
        expected = _pyproject_version()
    rc, out, err = _run(["--version"], capsys)
    assert rc == 0 and out == f"rslad-tune {expected}\n" and not err


def test_version_falls_back_to_pyproject_when_not_installed(monkeypatch):
    from importlib import metadata

    from rslad_tune.cli_args import version

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert version() == _pyproject_version()


def test_python_dash_m_rslad_tune_works():
    res = subprocess.run([sys.executable, "-m", "rslad_tune", "--version"], check=False, cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(r"rslad-tune \S+\n", res.stdout), res.stdout


# --------------------------------------------------------------------------- 2. a fast --help


def _seconds(cmd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=120)
    return time.perf_counter() - t0


def test_help_takes_about_as_long_as_starting_python():
    """A ratio against `python -c pass` measured alongside (median of 3, interleaved), not a wall-clock number: the
    heavy libraries take seconds to import, so importing one would put --help far beyond the bound."""
    bare, helps = [], []
    for _ in range(3):
        bare.append(_seconds([sys.executable, "-c", "pass"]))
        helps.append(_seconds([sys.executable, "-m", "rslad_tune", "--help"]))
    ratio = statistics.median(helps) / statistics.median(bare)
    print(f"--help {statistics.median(helps):.3f}s, python -c pass {statistics.median(bare):.3f}s, ratio {ratio:.2f}")
    assert ratio < 4, (helps, bare)


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"], ["--version"],
                                  ["completion", "bash"]])
def test_help_version_and_completion_import_no_heavy_library(argv):
    code = ("import sys\nfrom rslad_tune.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code, *argv], check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "HEAVY []", res.stdout[-500:]


def test_the_package_is_light_and_load_student_still_there():
    res = subprocess.run([sys.executable, "-c", f"import sys, rslad_tune; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"],
                         check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr
    import rslad_tune
    from rslad_tune import load_student
    from rslad_tune.sweep.export import load_student as real

    assert load_student is real and rslad_tune.load_student is real and "load_student" in dir(rslad_tune)
    with pytest.raises(AttributeError):
        _ = rslad_tune.no_such_name


# --------------------------------------------------------------------------- 3. verbs


def test_a_mistyped_verb_gets_a_did_you_mean(capsys):
    err = _one_line_error(*_run(["evalute", "runs/x"], capsys)[::2])
    assert err.startswith("rslad-tune: error: 'evalute' is not a verb; did you mean 'evaluate'? (verbs: tune, train, "), err
    err = _one_line_error(*_run(["search_spaces/quickstart.yaml"], capsys)[::2])
    assert "'search_spaces/quickstart.yaml' is not a verb (verbs: tune, train" in err and "did you mean" not in err


def test_options_first_still_mean_tune():
    from rslad_tune.cli_args import route

    assert route(["--space", "x.yaml"]) == ["tune", "--space", "x.yaml"]
    assert route(["evaluate", "x"]) == ["evaluate", "x"] and route(["--version"]) == ["--version"] and route([]) == []


# --------------------------------------------------------------------------- 4. --set section.key=value


def test_dotted_set_reaches_every_section():
    spec = load_sweep(QUICKSTART, parse_set_overrides(["tune.num_samples=2", "tune.scheduler.grace_period=2",
                                                       "trial.lr=0.01", "data.train_subset=2000", "report.n_aa=0"]))
    assert (spec.tune.num_samples, spec.tune.grace_period, spec.trial.lr, spec.trial.train_subset, spec.report.n_aa) == (
        2, 2, 0.01, 2000, 0)
    assert "alpha" in spec.search and spec.tune.reduction_factor == 2  # the rest of the YAML is as it was
    spec = load_sweep(QUICKSTART, parse_set_overrides(["experiment=quick2", "runs_dir=elsewhere"]))  # top-level keys
    assert (spec.experiment, spec.runs_dir) == ("quick2", "elsewhere")


def test_set_changes_only_its_own_path_of_the_yaml():
    from rslad_tune.sweep.spec import apply_overrides

    recipe = {"method": "sat", "epochs": 8}
    raw = {"teachers": {"a": {"train": recipe}, "b": {"train": recipe}}, "trial": {"lr": 0.1}}  # b: a YAML alias of a's
    out = apply_overrides(raw, {"teachers.a.train.epochs": 1})
    assert out["teachers"]["a"]["train"]["epochs"] == 1 and out["teachers"]["b"]["train"]["epochs"] == 8
    assert recipe["epochs"] == 8 and raw["trial"] == {"lr": 0.1}  # the loaded mapping itself is left alone


def test_a_set_of_a_searched_key_fixes_it_plain_or_dotted():
    for pair in ("alpha=0.9", "trial.alpha=0.9"):
        spec = load_sweep(QUICKSTART, parse_set_overrides([pair]))
        assert spec.trial.alpha == 0.9 and "alpha" not in spec.search and "epsilon" in spec.search, pair
    spec = load_sweep(QUICKSTART, parse_set_overrides(["train_subset=1500", "search.alpha={uniform: [0.6, 0.8]}"]))
    assert spec.trial.train_subset == 1500 and spec.search["alpha"].args == [0.6, 0.8]


def test_a_bad_dotted_key_gets_the_yamls_did_you_mean(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(*_run(["train", "--space", str(QUICKSTART), "--set", "tune.num_sample=2"], capsys)[::2])
    assert err.startswith("rslad-tune: error: --set tune.num_sample: 2 is not allowed; unknown key (did you mean 'num_samples'?)"), err
    # the same words as the key written in the YAML file
    (tmp_path / "s.yaml").write_text(re.sub(r"  num_samples: \d+", "  num_sample: 2", QUICKSTART.read_text()))
    with pytest.raises(SpecError) as yaml_err:
        load_sweep(tmp_path / "s.yaml")
    assert yaml_err.value.key == "tune.num_sample" and err.endswith(yaml_err.value.allowed)
    for pair, words in [("tun.num_samples=2", ["--set tun.num_samples", "did you mean 'tune'"]),
                        ("tune.scheduler.grace_period=9", ["--set tune.scheduler.grace_period", "9", "trial.epochs (4)"]),
                        ("report.n_aa=-1", ["--set report.n_aa", "-1", ">= 0"]),
                        ("tune.scheduler.type.x=1", ["--set tune.scheduler.type.x", "not a mapping"])]:
        err = _one_line_error(*_run(["train", "--space", str(QUICKSTART), "--set", pair], capsys)[::2])
        assert all(w in err for w in words), (pair, err)
    assert list(tmp_path.iterdir()) == [tmp_path / "s.yaml"]  # nothing written


def test_set_is_still_refused_with_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(*_run(["--space", str(QUICKSTART), "--resume", "--set", "tune.num_samples=2"], capsys)[::2])
    assert "--set" in err and "--resume" in err


# --------------------------------------------------------------------------- 5. $MLFLOW_TRACKING_URI


def test_tracking_uri_order_flag_yaml_env_default(tmp_path):
    env = {"MLFLOW_TRACKING_URI": "http://env:5000"}
    assert choose_tracking_uri("http://flag:1", "http://yaml:2", env) == "http://flag:1"
    assert choose_tracking_uri(None, "http://yaml:2", env) == "http://yaml:2"
    assert choose_tracking_uri(None, None, env) == "http://env:5000"
    assert choose_tracking_uri(None, None, {}) is None  # the default: sqlite:///<runs_dir>/mlflow.db
    assert choose_tracking_uri(None, None, {"MLFLOW_TRACKING_URI": ""}) is None  # empty: unset
    with pytest.raises(SpecError, match=r"^\$MLFLOW_TRACKING_URI: 'foo://bar' is not allowed; must be an MLflow tracking URI"):
        choose_tracking_uri(None, None, {"MLFLOW_TRACKING_URI": "foo://bar"})
    choose_tracking_uri("http://flag:1", None, {"MLFLOW_TRACKING_URI": "foo://bar"})  # not read when a flag is given
    # the one chooser every command calls: the same order, resolved against the runs folder
    assert choose_store(None, None, tmp_path, {}) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert choose_store(None, "http://yaml:2", tmp_path, env) == "http://yaml:2"
    assert choose_store(None, None, tmp_path, env) == "http://env:5000"


def test_no_module_keeps_the_store_in_a_global_and_the_spec_parser_reads_no_environment():
    import inspect

    from rslad_tune.sweep import spec, stores

    assert not hasattr(stores, "COMMAND_STORE") and "os.environ" not in inspect.getsource(spec)


def test_a_bad_mlflow_tracking_uri_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite://x.db")
    err = _one_line_error(*_run(["train", "--space", str(QUICKSTART)], capsys)[::2])
    assert "MLFLOW_TRACKING_URI" in err and "'sqlite://x.db'" in err and "sqlite:///" in err, err
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- 7. zoo list --json, 8. completion


def test_zoo_list_json(capsys):
    from rslad_tune.teachers.zoo import zoo_names

    rc, out, _ = _run(["zoo", "list", "--json"], capsys)
    rows = json.loads(out)
    assert rc == 0 and [r["name"] for r in rows] == zoo_names() and len(rows) >= 6
    keys = {"name", "params", "macs", "clean_acc", "pgd20_acc", "eval_n", "aa_acc", "aa_n", "build_time_s", "recipe"}
    assert all(set(r) == keys for r in rows)
    sat = next(r for r in rows if r["name"] == "fashion_mnist/sat_w32")
    assert 0 < sat["pgd20_acc"] < sat["clean_acc"] < 1 and sat["params"] > 0 and sat["recipe"]["method"] == "sat"


def test_completion_bash(capsys):
    rc, out, _ = _run(["completion", "bash"], capsys)
    assert rc == 0 and "rslad-tune" in out and "complete " in out
    assert "evaluate" in out and "--tracking-uri" in out and "_shtab_compgen_files" in out  # verbs, flags, paths
    rc, _, err = _run(["completion", "fish-ish"], capsys)
    assert rc == 2 and "fish-ish" in err
