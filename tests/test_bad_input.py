"""Bad input through the CLI: exit status 2, one line naming the key or file, the value and what is
allowed, no traceback, and nothing written to runs/ or MLflow. Runs in-process (fast); the YAML is a
small synthetic sweep so that the good version of every row gets past all checks."""
import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from rslad_tune.cli import main
from rslad_tune.models import build_model
from rslad_tune.files import save_weights

GOOD = {
    "experiment": "bad",
    "data": {"dataset": "synthetic", "train_subset": 200, "test_subset": 50, "val_size": 50},
    "teachers": {"t": {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1}}},
    "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 2, "teacher": "t"},
    "search": {"alpha": {"uniform": [0.5, 1.0]}},
    "tune": {"num_samples": 2},
}


def _yaml(**edits):
    """GOOD with dotted-path edits; a value of ... deletes the key."""
    def make(d: Path) -> list[str]:
        raw = copy.deepcopy(GOOD)
        for path, value in edits.items():
            keys, node = path.split("__"), raw
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            if value is ...:
                del node[keys[-1]]
            else:
                node[keys[-1]] = value
        (d / "space.yaml").write_text(yaml.safe_dump(raw))
        return ["--space", "space.yaml"]
    return make


def _teacher_file(writer, name="t.safetensors"):
    def make(d: Path) -> list[str]:
        writer(d / name)
        raw = copy.deepcopy(GOOD)
        raw["teachers"] = {"t": {"checkpoint": name, "arch": "small_cnn", "width": 6}}
        (d / "space.yaml").write_text(yaml.safe_dump(raw))
        return ["--space", "space.yaml"]
    return make


def _truncated(path):
    save_weights(build_model("small_cnn", 1, 10, 6), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path("pwned"),))


def _pickled(path):
    torch.save({"state_dict": build_model("small_cnn", 1, 10, 6).state_dict(), "x": _Evil()}, path)


def _args(*argv):
    return lambda d: list(argv)


def _with_yaml(*argv):
    return lambda d: _yaml()(d) + list(argv)


def _space_file(content: bytes):
    def make(d: Path) -> list[str]:
        (d / "x.yaml").write_bytes(content)
        return ["--space", "x.yaml"]
    return make


def _empty_sweep(d: Path) -> list[str]:
    exp = d / "old" / "bad"
    exp.mkdir(parents=True)
    (exp / "sweep.json").write_text(json.dumps({"experiment": "bad"}))
    return ["export", str(exp)]


# (id, argv builder, fragments the one-line message must hold)
ROWS = [
    ("unknown top key", _yaml(experimnt="x"), ["experimnt", "did you mean 'experiment'"]),
    ("unknown trial key", _yaml(trial__alpah=0.9), ["trial.alpah", "did you mean 'alpha'"]),
    ("unknown search key", _yaml(search__alhpa={"uniform": [0.5, 1]}), ["search.alhpa", "alpha"]),
    ("wrong type epochs", _yaml(trial__epochs="five"), ["trial.epochs", "'five'", "integer"]),
    ("wrong type lr", _yaml(trial__lr=[0.1]), ["trial.lr", "finite number"]),
    ("epsilon out of range", _yaml(trial__epsilon=2.0), ["trial.epsilon", "2.0"]),
    ("alpha out of range", _yaml(search__alpha={"uniform": [0.5, 1.5]}), ["search.alpha.uniform", "[0, 1]"]),
    ("fixed alpha out of range", _yaml(search={"epsilon": {"uniform": [0.05, 0.1]}}, trial__alpha=-0.2), ["trial.alpha", "-0.2"]),
    ("zero attack steps", _yaml(trial__attack_steps=0), ["trial.attack_steps", ">= 1"]),
    ("negative attack steps", _yaml(trial__attack_steps=-3), ["trial.attack_steps", "-3"]),
    ("zero eval steps", _yaml(trial__eval_steps=0), ["trial.eval_steps", ">= 1"]),
    ("zero batch size", _yaml(trial__batch_size=0), ["trial.batch_size", ">= 1"]),
    ("unknown method", _yaml(trial__method="rslda"), ["trial.method", "did you mean 'rslad'"]),
    ("unknown model", _yaml(trial__arch="resnet19"), ["trial.arch", "resnet18"]),
    ("unknown dataset", _yaml(data__dataset="mnist"), ["data.dataset", "fashion_mnist"]),
    ("unknown teacher name", _yaml(trial__teacher="tt"), ["trial.teacher", "'tt'", "t"]),
    ("unknown teacher in a choice", _yaml(search__teacher={"choice": ["t", "u"]}, trial__teacher=...), ["search.teacher.choice", "u"]),
    ("searched key also fixed", _yaml(trial__alpha=0.7), ["search.alpha", "also fixed"]),
    ("empty search space", _yaml(search={}), ["search", "searches nothing"]),
    ("zero samples", _yaml(tune__num_samples=0), ["tune.num_samples", ">= 1"]),
    ("unknown scheduler", _yaml(tune__scheduler={"type": "hyperband"}), ["tune.scheduler.type", "asha"]),
    ("grid with optuna", _yaml(search__alpha={"grid": [0.5, 1.0]}), ["search.alpha.grid", "random"]),
    ("val split too large", _yaml(data__val_size=500), ["val_size", "500"]),
    ("missing space file", _args("--space", "nowhere.yaml"), ["--space", "nowhere.yaml", "file not found"]),
    ("space file is binary", _space_file(b"\xff\xfe\x00bad"), ["--space", "x.yaml", "cannot be read"]),
    ("space file is not YAML", _space_file(b"a: [1, 2\nb: {"), ["--space", "not valid YAML"]),
    ("missing teacher checkpoint", _yaml(teachers={"t": {"checkpoint": "gone.safetensors", "arch": "small_cnn"}}),
     ["teachers.t.checkpoint", "gone.safetensors", "file not found"]),
    ("corrupt teacher checkpoint", _teacher_file(lambda p: p.write_bytes(b"\x00" * 64)),
     ["teachers.t.checkpoint", "not a readable safetensors file"]),
    ("truncated teacher checkpoint", _teacher_file(_truncated), ["teachers.t.checkpoint", "not a readable safetensors file"]),
    ("pickled code in a teacher file", _teacher_file(_pickled, "t.pt"), ["teachers.t.checkpoint", "refused"]),
    ("checkpoint of another architecture", _teacher_file(lambda p: save_weights(build_model("small_cnn", 1, 10, 8), p)),
     ["teachers.t.checkpoint", "does not match the architecture"]),
    ("data dir without data", lambda d: (d / "empty").mkdir() or _yaml(data__dataset="fashion_mnist")(d)
     + ["--data-dir", str(d / "empty")], ["data_dir", "holds no Fashion-MNIST"]),
    ("malformed tracking URI", _with_yaml("--tracking-uri", "foo://bar"), ["--tracking-uri", "foo://bar", "sqlite:///"]),
    ("relative sqlite URI typo", _with_yaml("--tracking-uri", "sqlite://x.db"), ["--tracking-uri", "sqlite:///"]),
    ("unreachable Ray address", _with_yaml("--address", "127.0.0.1:9"), ["--address", "127.0.0.1:9", "ray start --head"]),
    ("malformed Ray address", _with_yaml("--address", "nohost"), ["--address", "nohost", "host:port"]),
    ("--set without =", _with_yaml("--set", "epochs"), ["--set", "epochs", "key=value"]),
    ("--set of an unknown key", _with_yaml("--set", "widht=8"), ["widht", "did you mean 'width'"]),
    ("--set of a bad value", _with_yaml("--set", "lr=-1"), ["trial.lr", "-1"]),
    ("resume with nothing to resume", _with_yaml("--resume"), ["--resume", "holds no sweep to resume"]),
    ("export of a sweep with no finished trial", _empty_sweep, ["experiment", "finished"]),
    ("export of a folder that is no sweep", _args("export", "nowhere"), ["experiment", "nowhere", "sweep.json"]),
    ("evaluate a missing folder", _args("evaluate", "nowhere"), ["nowhere"]),
    ("compare a folder that is no sweep", lambda d: (d / "x").mkdir() or ["compare", str(d / "x")], ["experiment", "x"]),
    ("report with negative --n-aa", lambda d: ["report", str(d), "--n-aa", "-1"], ["--n-aa", "-1"]),
    ("evaluate with a zero --n-examples", _args("evaluate", "x", "--n-examples", "0"), ["--n-examples", "'0'", "positive"]),
    ("unknown CLI flag", _with_yaml("--bogus"), ["unrecognized arguments: --bogus"]),
]


@pytest.mark.parametrize("make,fragments", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(make, fragments, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RSLAD_TUNE_OFFLINE", "1")
    argv = make(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("rslad-tune: error: ")
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, set(after) ^ set(before)  # nothing written: no runs/, no mlflow.db, no teacher
    assert not Path("pwned").exists()


def test_the_table_is_large_enough_and_the_good_yaml_passes_the_checks(tmp_path, monkeypatch):
    assert len(ROWS) >= 30
    monkeypatch.chdir(tmp_path)
    from rslad_tune.cli import _load, _parser

    _yaml()(tmp_path)
    spec = _load(_parser().parse_args(["tune", "--space", "space.yaml"]))
    assert spec.experiment == "bad" and not (tmp_path / "runs").exists()
