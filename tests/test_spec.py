import copy
from pathlib import Path

import pytest
import yaml

from rslad_tune.cli import main
from rslad_tune.spec import SpecError, load_sweep, parse_sweep

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"


def base() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def test_quickstart_parses():
    spec = load_sweep(QUICKSTART)
    assert spec.experiment == "quickstart" and spec.tune.num_samples >= 8 and spec.tune.max_concurrent == 2
    assert set(spec.teachers) == {"sat_w16", "sat_w24"} and spec.search["teacher"].args == ["sat_w16", "sat_w24"]
    assert spec.trial.dataset == "fashion_mnist" and spec.trial.eval_epsilon == 0.1
    assert spec.teachers["sat_w16"].train.method == "sat"
    assert spec.teachers["sat_w16"].cache_key() != spec.teachers["sat_w24"].cache_key()


def test_shipped_comparison_and_teacher_spaces_parse(tmp_path, monkeypatch):
    monkeypatch.setenv("RSLAD_TUNE_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # RobustBench's default model dir is ./models
    placed = tmp_path / "models" / "cifar10" / "Linf" / "Zhang2019Theoretically.pt"
    placed.parent.mkdir(parents=True)
    placed.touch()  # parsing only checks that the file is there; loading it is test_teachers' job
    paper = load_sweep(ROOT / "search_spaces" / "paper.yaml")
    assert paper.teachers["trades_wrn34"].robustbench == "Zhang2019Theoretically"
    assert len(paper.search["method"].args) == 7 and paper.search["arch"].args == ["resnet18", "mobilenet_v2"]
    t = paper.trial
    assert (t.epochs, t.lr, t.batch_size, t.attack_steps, t.schedule) == (300, 0.1, 128, 10, "piecewise")
    assert t.epsilon == pytest.approx(8 / 255) and t.step_size == pytest.approx(2 / 255) and t.alpha == pytest.approx(5 / 6)
    assert [round(m * 300) for m in t.milestones] == [215, 260, 285]
    fm = load_sweep(ROOT / "search_spaces" / "paper_fmnist.yaml")
    assert len(fm.search["method"].args) == 7 and fm.search["seed"].args == [0, 1, 2] and fm.tune.scheduler == "fifo"
    teacher = load_sweep(ROOT / "search_spaces" / "teacher.yaml")
    assert len(teacher.teachers) >= 4 and teacher.search["teacher"].args == list(teacher.teachers)
    assert {"natural", "sat", "trades"} <= {s.train.method for s in teacher.teachers.values()}
    assert teacher.tune.scheduler == "asha" and teacher.tune.searcher == "optuna" and teacher.report.n_aa > 0
    from rslad_tune.tuning import teacher_points

    points = teacher_points(teacher)  # every teacher is tried once before TPE proposes
    assert [p["teacher"] for p in points] == list(teacher.teachers)
    assert all(p["alpha"] == 0.75 and p["epsilon"] == pytest.approx(0.1) for p in points)


def _set(path: str, value):
    def edit(root):
        keys, d = path.split("."), root
        for k in keys[:-1]:
            d = d.setdefault(k, {})
        d[keys[-1]] = value
        return root
    return edit


def _delete(path: str):
    def edit(root):
        keys, d = path.split("."), root
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
        return root
    return edit


# (edit, key named in the message, a fragment of what is allowed)
BAD = [
    (_set("trial.alhpa", 0.5), "trial.alhpa", "did you mean 'alpha'"),
    (_set("tune.num_sample", 3), "tune.num_sample", "did you mean 'num_samples'"),
    (_set("serach", {}), "serach", "did you mean 'search'"),
    (_set("trial.lr", -0.1), "trial.lr", "> 0"),
    (_set("trial.lr", "fast"), "trial.lr", "finite number"),
    (_set("search.alpha", {"uniform": [0.5, 1.5]}), "search.alpha.uniform", "[0, 1]"),
    (_set("search.epsilon", {"uniform": [0.0, 0.1]}), "search.epsilon.uniform", "(0, 1]"),
    (_set("search.attack_steps", {"choice": [0, 5]}), "search.attack_steps.choice", ">= 1"),
    (_set("search.attack_steps", {"uniform": [1, 5]}), "search.attack_steps.uniform", "integer"),
    (_set("search.alpha", {"uniform": [0.9, 0.5]}), "search.alpha.uniform", "low < high"),
    (_set("search.alpha", {"gaussian": [0.5, 1]}), "search.alpha.gaussian", "unknown key"),
    (_set("search.teacher", {"choice": ["sat_w16", "nope"]}), "search.teacher.choice", "sat_w16"),
    (_set("search.lr", {"loguniform": [0.0, 0.1]}), "search.lr.loguniform", "> 0"),
    (_set("search.dataset", {"choice": ["cifar10"]}), "search.dataset", "cannot be searched"),
    (_set("search.epochs", {"choice": [2, 4]}), "search.epochs", "ASHA"),
    (_set("trial.alpha", 0.5), "search.alpha", "also fixed"),
    (_set("trial.method", "rsald"), "trial.method", "did you mean 'rslad'"),
    (_set("trial.arch", "resnet19"), "trial.arch", "did you mean 'resnet18'"),
    (_set("data.dataset", "mnist"), "data.dataset", "fashion_mnist"),
    (_set("trial.epochs", 0), "trial.epochs", ">= 1"),
    (_set("trial.batch_size", 12.5), "trial.batch_size", "integer"),
    (_set("trial.schedule", "step"), "trial.schedule", "cosine"),
    (_set("tune.scheduler.reduction_factor", 1), "tune.scheduler.reduction_factor", "> 1"),
    (_set("tune.scheduler.grace_period", 99), "tune.scheduler.grace_period", "<= trial.epochs"),
    (_set("tune.resources.gpu", -1), "tune.resources.gpu", ">= 0"),
    (_set("tune.searcher.type", "hyperopt"), "tune.searcher.type", "optuna"),
    (_set("teachers.sat_w16", {"checkpoint": "/no/such/file.safetensors", "arch": "small_cnn"}), "teachers.sat_w16.checkpoint", "file not found"),
    (_set("teachers.sat_w16.train.method", "rslad"), "teachers.sat_w16.train.method", "sat"),
    (_set("teachers.sat_w16.train.widht", 8), "teachers.sat_w16.train.widht", "did you mean 'width'"),
    (_delete("experiment"), "experiment", "required"),
    (_set("experiment", "a/b"), "experiment", "folder name"),
    (_set("tracking_uri", "mysqlx:/x"), "tracking_uri", "MLflow tracking URI"),
    (_set("data.val_size", -1), "data.val_size", ">= 0"),
    (_set("trial.eval_step_size", 0.5), "trial.eval_step_size", "<= eval_epsilon"),
    (_set("search", {}), "search", "searches nothing"),
    (_set("teachers", {}), "search.teacher.choice", "the teachers section is empty"),
    (_set("tune.scheduler.type", "pbt"), "tune.scheduler.type", "asha"),
    (_set("teachers.sat_w16.card_examples", 0), "teachers.sat_w16.card_examples", ">= 1"),
]


@pytest.mark.parametrize("edit,key,allowed", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_input_names_key_value_and_what_is_allowed(edit, key, allowed):
    raw = edit(copy.deepcopy(base()))
    with pytest.raises(SpecError) as err:
        parse_sweep(raw, path="space.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("space.yaml: ") and key in msg and allowed in msg, msg


def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = base()
    raw["trial"]["alpha_"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    assert main(["--space", "bad.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trial.alpha_" in err and "did you mean 'alpha'" in err
    assert main(["--space", "missing.yaml"]) == 2
    assert main(["train", "--space", str(QUICKSTART), "--set", "lr=-1"]) == 2
    assert "trial.lr" in capsys.readouterr().err
    assert main(["--space", str(QUICKSTART), "--tracking-uri", "nonsense"]) == 2
    assert not (tmp_path / "runs").exists()


def test_cli_data_dir_without_data_exits_2_before_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["--space", str(QUICKSTART), "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data_dir" in err and "holds no Fashion-MNIST" in err
    assert not (tmp_path / "runs").exists()
