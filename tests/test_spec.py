import copy
from pathlib import Path

import pytest

from rslad_tune.teachers.train import cache_key
import yaml

from rslad_tune.cli import main
from rslad_tune.sweep.spec import load_sweep, parse_sweep
from rslad_tune.trial.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"
TRAINED = ROOT / "tests" / "data" / "trained_teachers.yaml"  # the quickstart of before the zoo: two `train:` teachers


def base() -> dict:
    return yaml.safe_load(TRAINED.read_text())


def test_quickstart_parses():
    spec = load_sweep(QUICKSTART)
    assert spec.experiment == "quickstart" and spec.tune.num_samples >= 6 and spec.tune.max_concurrent == 2
    assert set(spec.teachers) == {"natural_w16", "sat_w16", "none"}
    assert spec.search["teacher"].args == ["natural_w16", "sat_w16", "none"]
    assert spec.trial.dataset == "fashion_mnist" and spec.trial.eval_epsilon == 0.1
    assert spec.teachers["none"].source == "baseline"  # the no-teacher reference of "should I distill?"
    assert all(t.source == "zoo" for n, t in spec.teachers.items() if n != "none")  # shipped teachers: nothing to train
    trained = load_sweep(TRAINED)
    assert trained.teachers["sat_w16"].args["train"].method == "sat"
    assert cache_key(trained.teachers["sat_w16"].args["train"]) != cache_key(trained.teachers["sat_w24"].args["train"])


def test_shipped_comparison_and_teacher_spaces_parse(tmp_path, monkeypatch):
    monkeypatch.setenv("RSLAD_TUNE_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # RobustBench's default model dir is ./models
    placed = tmp_path / "models" / "cifar10" / "Linf" / "Zhang2019Theoretically.pt"
    placed.parent.mkdir(parents=True)
    placed.touch()  # parsing only checks that the file is there; loading it is test_teachers' job
    paper = load_sweep(ROOT / "search_spaces" / "paper.yaml")
    assert paper.teachers["trades_wrn34"].args["robustbench"] == "Zhang2019Theoretically"
    assert len(paper.search["method"].args) == 7 and paper.search["arch"].args == ["resnet18", "mobilenet_v2"]
    t = paper.trial
    assert (t.epochs, t.lr, t.batch_size, t.attack_steps, t.schedule) == (300, 0.1, 128, 10, "piecewise")
    assert t.epsilon == pytest.approx(8 / 255) and t.step_size == pytest.approx(2 / 255) and t.alpha == pytest.approx(5 / 6)
    assert [round(m * 300) for m in t.milestones] == [215, 260, 285]
    fm = load_sweep(ROOT / "search_spaces" / "paper_fmnist.yaml")
    assert len(fm.search["method"].args) == 7 and fm.search["seed"].args == [0, 1, 2] and fm.tune.scheduler == "fifo"
    from rslad_tune.teachers import zoo

    teacher = load_sweep(ROOT / "search_spaces" / "teacher.yaml")
    assert len(teacher.teachers) >= 4 and teacher.search["teacher"].args == list(teacher.teachers)
    methods = {yaml.safe_load((zoo.zoo_folder(s.args["zoo"]) / "recipe.yaml").read_text())["teacher"]["train"]["method"]
               for s in teacher.teachers.values() if s.source == "zoo"}
    assert {"natural", "sat", "trades"} <= methods and len(teacher.teachers) >= 6
    assert teacher.tune.scheduler == "asha" and teacher.tune.searcher == "optuna" and teacher.report.n_aa > 0
    from rslad_tune.sweep.tuning import teacher_points

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
    (_set("search.attack_steps", {"choice": [0, 5]}), "search.attack_steps.choice", "[1, 10000]"),
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
    (_set("trial.epochs", 0), "trial.epochs", "[1, 10000]"),
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
    (_set("data.val_size", -1), "data.val_size", ">= 1"),
    (_set("trial.eval_step_size", 0.5), "trial.eval_step_size", "<= eval_epsilon"),
    (_set("search", {}), "search", "searches nothing"),
    (_set("teachers", {}), "search.teacher.choice", "the teachers section is empty"),
    (_set("tune.scheduler.type", "pbt"), "tune.scheduler.type", "asha"),
    (_set("teachers.sat_w16.card_examples", 0), "teachers.sat_w16.card_examples", ">= 1"),
]


def _checked(raw):
    """parse_sweep, then the teacher checks preflight runs before anything is written (files, zoo names)."""
    from rslad_tune.teachers.sources import check_teachers

    spec = parse_sweep(raw, path="space.yaml")
    try:
        check_teachers(spec.teachers, raw.get("data") or {})
    except SpecError as e:
        raise e.located("space.yaml") from None
    return spec


@pytest.mark.parametrize("edit,key,allowed", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_input_names_key_value_and_what_is_allowed(edit, key, allowed):
    raw = edit(copy.deepcopy(base()))
    with pytest.raises(SpecError) as err:
        _checked(raw)
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


# --------------------------------------------------------------------------- numbers as people write them


def test_exponent_floats_in_the_yaml_file_and_in_set(tmp_path):
    from rslad_tune.sweep.spec import parse_set_overrides

    text = QUICKSTART.read_text().replace("  lr: 0.05\n", "  lr: 1e-3\n  weight_decay: 5e-4\n")
    text = text.replace("epsilon: {uniform: [0.08, 0.12]}", "lr: {loguniform: [1e-4, 1E-1]}")
    (tmp_path / "space.yaml").write_text(text.replace("  lr: 1e-3\n", ""))
    spec = load_sweep(tmp_path / "space.yaml")
    assert spec.trial.weight_decay == 5e-4 and isinstance(spec.trial.weight_decay, float)
    assert spec.search["lr"].args == [1e-4, 0.1]
    (tmp_path / "space.yaml").write_text(text.replace("lr: {loguniform: [1e-4, 1E-1]}", "epsilon: {uniform: [0.08, 0.12]}"))
    assert load_sweep(tmp_path / "space.yaml").trial.lr == 1e-3
    overrides = parse_set_overrides(["lr=1e-3", "weight_decay=5E-4", "epochs=2", "schedule=constant", "momentum=9.e-1"])
    assert overrides == {"lr": 1e-3, "weight_decay": 5e-4, "epochs": 2, "schedule": "constant", "momentum": 0.9}
    spec = load_sweep(QUICKSTART, overrides=overrides)
    assert (spec.trial.lr, spec.trial.weight_decay, spec.trial.epochs) == (1e-3, 5e-4, 2)
    assert parse_set_overrides(["teacher=sat_w16", "width=null"]) == {"teacher": "sat_w16", "width": None}
    with pytest.raises(SpecError, match=r"trial\.lr: -0\.001 is not allowed; must be > 0"):
        load_sweep(QUICKSTART, overrides=parse_set_overrides(["lr=-1e-3"]))


def test_the_yaml_loader_leaves_pyyaml_alone():
    from rslad_tune.trial.yaml_loader import load_yaml

    assert yaml.safe_load("1e-3") == "1e-3"  # other code that reads YAML keeps PyYAML's own rules
    assert load_yaml("[1e-3, 1.5e3, 10, 0x10, .5, 1e, e3, 1.2.3, 2024-01-02]")[:8] == [1e-3, 1500.0, 10, 16, 0.5, "1e", "e3", "1.2.3"]


# --------------------------------------------------------------------------- one owner per name


def test_allowed_names_come_from_the_registries_that_run_them():
    from dataclasses import fields

    from rslad_tune.trial.attacks import STARTS
    from rslad_tune.trial.config import TrialConfig, check_trial_value
    from rslad_tune.trial.data import AUGMENTS, LOADERS
    from rslad_tune.trial.methods import METHODS
    from rslad_tune.trial.models import REGISTRY
    from rslad_tune.trial.schedules import SCHEDULES

    for key, registry in [("dataset", LOADERS), ("augment", AUGMENTS), ("method", METHODS), ("arch", REGISTRY),
                          ("attack_start", STARTS), ("schedule", SCHEDULES)]:
        for name in registry:
            assert check_trial_value(key, name) == name
        with pytest.raises(SpecError) as err:
            check_trial_value(key, "no-such-name")
        assert f"must be one of {', '.join(registry)}" in str(err.value)
    assert all("check" in f.metadata for f in fields(TrialConfig))  # every field declares its check


def test_trial_config_hashes_as_before():
    # teachers.train.cache_key digests TrialConfig.to_dict(): field order, names and defaults are part of it
    spec = load_sweep(TRAINED)
    assert {k: cache_key(t.args["train"]) for k, t in spec.teachers.items()} == {"sat_w16": "d41145e35c93", "sat_w24": "515f9127d986"}


def test_tune_and_report_sections_read_from_their_fields(tmp_path):
    raw = base()
    raw["tune"] = {"seed": 3, "searcher": {"type": "random", "seed": 5}, "resources": {"cpu": 2, "gpu": 0.5},
                   "scheduler": {"type": "fifo"}, "max_failures": 1}
    raw["report"] = {"enabled": False, "n_examples": None, "n_aa": 0, "noise_std": 0.76}
    spec = parse_sweep(raw)
    t = spec.tune
    assert (t.seed, t.searcher, t.cpus_per_trial, t.gpus_per_trial, t.scheduler, t.max_failures) == (5, "random", 2.0, 0.5, "fifo", 1)
    assert (spec.report.enabled, spec.report.n_examples, spec.report.n_aa, spec.report.noise_std) == (False, None, 0, 0.76)
    raw["tune"] = {"seed": 3}
    assert parse_sweep(raw).tune.seed == 3
    for section, value, fragment in [("tune", {"resources": {"cpus": 1}}, "tune.resources.cpus: 1 is not allowed; unknown key (did you mean 'cpu'?)"),
                                     ("tune", {"searcher": "random"}, "tune.searcher: 'random' is not allowed; must be a mapping"),
                                     ("report", {"enabled": "yes"}, "report.enabled: 'yes' is not allowed; must be true or false"),
                                     ("report", {"n_aa": -1}, "report.n_aa: -1 is not allowed; must be >= 0"),
                                     ("report", {"noise_std": 0}, "report.noise_std: 0 is not allowed; must be > 0")]:
        with pytest.raises(SpecError) as err:
            parse_sweep({**raw, section: value})
        assert fragment in str(err.value)


# --------------------------------------------------------------------------- zoo teachers


def _zoo(tmp_path, monkeypatch, dataset="fashion_mnist", built=True):
    from rslad_tune.teachers import zoo

    folder = tmp_path / "zoo" / "fashion_mnist" / "sat_w8"
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(f"data: {{dataset: {dataset}}}\nteacher:\n  train: {{method: sat, arch: small_cnn, "
                                        "width: 8, lr: 5e-2}\n")
    if built:
        (folder / "config.json").write_text('{"arch": "small_cnn", "width": 8, "in_channels": 1, "num_classes": 10, "image_size": 28}')
        (folder / "card.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(zoo, "ZOO_ROOT", tmp_path / "zoo")
    return folder


def _zoo_sweep(teacher, dataset="fashion_mnist"):
    raw = base()
    raw["data"] = {"dataset": dataset}
    raw["teachers"] = {"z": teacher}
    raw["search"] = {"alpha": {"uniform": [0.5, 1.0]}}
    raw["trial"]["teacher"] = "z"
    return _checked(raw)


def test_zoo_teacher(tmp_path, monkeypatch):
    from rslad_tune.teachers import zoo

    folder = _zoo(tmp_path, monkeypatch)
    t = _zoo_sweep({"zoo": "fashion_mnist/sat_w8"}).teachers["z"]
    assert (t.source, t.args) == ("zoo", {"zoo": "fashion_mnist/sat_w8"}) and zoo.zoo_folder(t.args["zoo"]) == folder
    assert zoo.read_recipe("fashion_mnist/sat_w8")["teacher"]["train"]["lr"] == 0.05  # 5e-2 is a float


@pytest.mark.parametrize("teacher,dataset,fragment", [
    ({"zoo": "fashion_mnist/sat_w9"}, "fashion_mnist",
     "teachers.z.zoo: 'fashion_mnist/sat_w9' is not allowed; is not in the teacher zoo (did you mean 'fashion_mnist/sat_w8'?)"),
    ({"zoo": "fashion_mnist/sat_w8"}, "synthetic",
     "teachers.z.zoo: 'fashion_mnist/sat_w8' is not allowed; was trained on 'fashion_mnist', which does not match data.dataset 'synthetic'"),
    ({"zoo": "fashion_mnist/sat_w8", "arch": "small_cnn"}, "fashion_mnist",
     "teachers.z.arch: 'small_cnn' is not allowed; a zoo teacher's architecture comes from its config.json"),
    ({"zoo": "fashion_mnist/sat_w8", "width": 8}, "fashion_mnist", "teachers.z.width: 8 is not allowed; a zoo teacher's architecture"),
    ({"zoo": "fashion_mnist/sat_w8", "card_aa_examples": 0}, "fashion_mnist",
     "teachers.z.card_aa_examples: 0 is not allowed; a zoo teacher's card ships with it"),
    ({"zoo": "fashion_mnist/sat_w8", "train": {"method": "sat"}}, "fashion_mnist", "give exactly one of"),
    ({"zoo": "fashion_mnist/sat_w8", "model_dir": "x"}, "fashion_mnist", "teachers.z.model_dir: 'x' is not allowed; only a `robustbench:` teacher"),
])
def test_zoo_teacher_bad_input(tmp_path, monkeypatch, teacher, dataset, fragment):
    _zoo(tmp_path, monkeypatch)
    with pytest.raises(SpecError) as err:
        _zoo_sweep(teacher, dataset)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("space.yaml: ") and fragment in msg, msg


def test_unbuilt_zoo_teacher_names_the_build_command(tmp_path, monkeypatch):
    _zoo(tmp_path, monkeypatch, built=False)
    with pytest.raises(SpecError, match=r"teachers\.z\.zoo: 'fashion_mnist/sat_w8' .*rslad-tune zoo build fashion_mnist/sat_w8"):
        _zoo_sweep({"zoo": "fashion_mnist/sat_w8"})
