"""Bad input through the CLI: exit status 2, one line naming the key or file, the value and what is
allowed, no traceback, and nothing written to runs/ or MLflow. Runs in-process (fast); the YAML is a
small synthetic sweep so that the good version of every row gets past all checks."""
import copy
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from rslad_tune.cli import main
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.files import save_weights
from rslad_tune.trial.models import build_model

GOOD = {
    "experiment": "bad",
    "data": {"dataset": "synthetic", "train_subset": 200, "test_subset": 50, "val_size": 50},
    "teachers": {"t": {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1}}},
    "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 2, "teacher": "t"},
    "search": {"alpha": {"uniform": [0.5, 1.0]}},
    "tune": {"num_samples": 2},
}
GOOD_TRIAL = TrialConfig(**GOOD["data"], **GOOD["trial"]).to_dict()  # the trial.json / config.json of GOOD


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


def _tampered_export(config: dict | None = None, metrics=None):
    """runs/old/best: an export whose config.json or metrics.json was changed (given to evaluate)."""
    def make(d: Path) -> list[str]:
        best = d / "runs" / "old" / "best"
        best.mkdir(parents=True)
        save_weights(build_model("small_cnn", 1, 10, 4), best / "model.safetensors")
        trial = TrialConfig(**GOOD["data"], **GOOD["trial"]).to_dict()
        good = {"arch": "small_cnn", "width": 4, "in_channels": 1, "num_classes": 10, "image_size": 28, "trial": trial}
        (best / "config.json").write_text(json.dumps({**good, **(config or {})}))
        if metrics is not None:
            (best / "metrics.json").write_text(json.dumps(metrics))
        return ["evaluate", str(best), "--attacks", "clean", "--n-aa", "0"]
    return make


def _tampered_trial(result: dict | None = None, trial_json: dict | None = None, verb: str = "export"):
    """runs/old with one finished trial whose result.json or trial.json was changed."""
    def make(d: Path) -> list[str]:
        argv = _sweep_dir(json.dumps({"experiment": "old"}), verb, trial=True)(d)
        t = d / "runs" / "old" / "trial_1"
        if result is not None:
            (t / "result.json").write_text(json.dumps(result) + "\n")
        cfg = TrialConfig(**GOOD["data"], **GOOD["trial"]).to_dict()
        raw = {"trial": cfg, "history": [{"epoch": 2, "pgd_acc": 0.5, "clean_acc": 0.6}]}
        (t / "checkpoint_000001" / "trial.json").write_text(json.dumps({**raw, **(trial_json or {})}))
        for name in ("best.safetensors", "model.safetensors"):  # intact weights: the tampered JSON is the only fault
            save_weights(build_model("small_cnn", 1, 10, 4), t / "checkpoint_000001" / name)
        return argv
    return make


def _yaml_text(old: str, new: str):
    """GOOD as PyYAML writes it, one line replaced: for what only YAML text can say (yes, on, duplicate keys)."""
    def make(d: Path) -> list[str]:
        text = yaml.safe_dump(GOOD)
        assert old in text, old
        (d / "space.yaml").write_text(text.replace(old, new, 1))
        return ["--space", "space.yaml"]
    return make


def _nonfinite(value, suffix=".safetensors"):
    def write(path):
        model = build_model("small_cnn", 1, 10, 6)
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] = value
        torch.save(model.state_dict(), path) if suffix == ".pt" else save_weights(model, path)
    return _teacher_file(write, f"t{suffix}")


def _flipped(path):
    save_weights(build_model("small_cnn", 1, 10, 6), path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # readable, but not the tensors its digest was written for
    path.write_bytes(bytes(data))


def _sweep_dir(sweep_json: str | None, verb: str, *extra: str, trial: bool = False):
    """runs/old: a folder given to export/compare/report (its sweep.json as text, or none), optionally with one
    finished trial whose best checkpoint is truncated."""
    def make(d: Path) -> list[str]:
        exp = d / "runs" / "old"
        exp.mkdir(parents=True)
        if sweep_json is not None:
            (exp / "sweep.json").write_text(sweep_json)
        if trial:
            ckpt = exp / "trial_1" / "checkpoint_000001"
            ckpt.mkdir(parents=True)
            cfg = TrialConfig(**GOOD["data"], **GOOD["trial"]).to_dict()
            (ckpt / "trial.json").write_text(json.dumps({"trial": cfg, "history": [{"epoch": 2, "pgd_acc": 0.5}]}))
            _truncated(ckpt / "best.safetensors")
            _truncated(ckpt / "model.safetensors")
            (exp / "trial_1" / "result.json").write_text(json.dumps({"trial_id": "1", "best_pgd_acc": 0.5, "epoch": 2,
                                                                      "best_epoch": 2}) + "\n")
        return [verb, str(exp), *extra]
    return make


def _damaged_resume(d: Path) -> list[str]:
    """A sweep folder signed by this machine (test_reliability's) whose one checkpoint has a flipped bit."""
    from rslad_tune.sweep.manifest import write_manifest

    exp = d / "runs" / "bad"
    ckpt = exp / "trial_a" / "checkpoint_000002"
    ckpt.mkdir(parents=True)
    for f in (d / "space.yaml", exp / "space.yaml"):
        f.write_text(yaml.safe_dump(GOOD))
    (exp / "sweep.json").write_text(json.dumps({"experiment": "bad", "space": str(d / "space.yaml")}))
    write_manifest(exp)
    (ckpt / "state.pt").write_bytes(b"")  # (not read before the weights are verified)
    for name in ("model.safetensors", "best.safetensors"):
        save_weights(build_model("small_cnn", 1, 10, 4), ckpt / name)
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-5] ^= 0x01  # one bit of a tensor: the file parses, its digest no longer matches
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    return ["resume", str(exp)]


def _alias_bomb(levels: int) -> str:
    """A "billion laughs": `levels` lists of 9 aliases of the one before, 9**(levels + 1) values expanded."""
    lines = ['  a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "lol:\n" + "\n".join(lines) + "\n"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


HUGE_INT = "1" + "0" * 5000  # int() and str() of more than 4300 digits raise ValueError


def _foreign_student(d: Path) -> list[str]:
    (d / "model").mkdir()
    (d / "model" / "config.json").write_text(json.dumps({"arch": "small_cnn", "layers": 3}))
    return ["evaluate", str(d / "model")]


# (id, argv builder, fragments the one-line message must hold)
def _corrupt_gz(d: Path) -> list:
    """The four Fashion-MNIST files of a data dir, the first of them not gzip at all (a cut download)."""
    from rslad_tune.trial.data import FMNIST_FILES

    (d / "fm").mkdir()
    for f in FMNIST_FILES:
        (d / "fm" / f"{f}.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")
    return []


ROWS = [
    ("unknown top key", _yaml(experimnt="x"), ["experimnt", "did you mean 'experiment'"]),
    ("unknown trial key", _yaml(trial__alpah=0.9), ["trial.alpah", "did you mean 'alpha'"]),
    ("unknown search key", _yaml(search__alhpa={"uniform": [0.5, 1]}), ["search.alhpa", "alpha"]),
    ("wrong type epochs", _yaml(trial__epochs="five"), ["trial.epochs", "'five'", "integer"]),
    ("wrong type lr", _yaml(trial__lr=[0.1]), ["trial.lr", "finite number"]),
    ("epsilon out of range", _yaml(trial__epsilon=2.0), ["trial.epsilon", "2.0"]),
    ("alpha out of range", _yaml(search__alpha={"uniform": [0.5, 1.5]}), ["search.alpha.uniform", "[0, 1]"]),
    ("fixed alpha out of range", _yaml(search={"epsilon": {"uniform": [0.05, 0.1]}}, trial__alpha=-0.2), ["trial.alpha", "-0.2"]),
    ("zero attack steps", _yaml(trial__attack_steps=0), ["trial.attack_steps", "[1, 10000]"]),
    ("negative attack steps", _yaml(trial__attack_steps=-3), ["trial.attack_steps", "-3"]),
    ("zero eval steps", _yaml(trial__eval_steps=0), ["trial.eval_steps", "[1, 10000]"]),
    ("zero batch size", _yaml(trial__batch_size=0), ["trial.batch_size", "[1, 1000000]"]),
    ("unknown method", _yaml(trial__method="rslda"), ["trial.method", "did you mean 'rslad'"]),
    ("unknown model", _yaml(trial__arch="resnet19"), ["trial.arch", "resnet18"]),
    ("unknown dataset", _yaml(data__dataset="mnist"), ["data.dataset", "fashion_mnist"]),
    ("unknown teacher name", _yaml(trial__teacher="tt"), ["trial.teacher", "'tt'", "t"]),
    ("unknown teacher in a choice", _yaml(search__teacher={"choice": ["t", "u"]}, trial__teacher=...), ["search.teacher.choice", "u"]),
    ("searched key also fixed", _yaml(trial__alpha=0.7), ["search.alpha", "also fixed"]),
    ("empty search space", _yaml(search={}), ["search", "searches nothing"]),
    ("zero samples", _yaml(tune__num_samples=0), ["tune.num_samples", "[1, 100000]"]),
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
    ("corrupt .gz in the data dir", lambda d: _corrupt_gz(d) + _yaml(data__dataset="fashion_mnist")(d)
     + ["--data-dir", str(d / "fm")], ["data_dir", "train-images-idx3-ubyte.gz", "cannot be read", "intact copy"]),
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
    # --- numeric edge cases: NaN/inf, huge counts and widths, seeds, what a scheduler or the machine cannot do
    ("NaN learning rate", _yaml(trial__lr=float("nan")), ["trial.lr", "nan", "finite number"]),
    ("infinite epsilon", _yaml(trial__epsilon=float("inf")), ["trial.epsilon", "inf", "finite number"]),
    ("NaN bound of a uniform", _yaml(search__alpha={"uniform": [0.5, float("nan")]}), ["search.alpha.uniform", "nan"]),
    ("infinite loguniform bound", _yaml(search={"lr": {"loguniform": [1e-3, float("inf")]}}), ["search.lr.loguniform", "inf"]),
    ("NaN cpus per trial", _yaml(tune__resources={"cpu": float("nan")}), ["tune.resources.cpu", "nan"]),
    ("infinite reduction factor", _yaml(tune__scheduler={"reduction_factor": float("inf")}),
     ["tune.scheduler.reduction_factor", "inf"]),
    ("reduction factor of 1", _yaml(tune__scheduler={"reduction_factor": 1}), ["tune.scheduler.reduction_factor", "> 1"]),
    ("zero grace period", _yaml(tune__scheduler={"grace_period": 0}), ["tune.scheduler.grace_period", ">= 1"]),
    ("a number for reference", _yaml(teachers__t__reference=3), ["teachers.t.reference", "3", "true or false"]),
    ("a word for reference_in_rungs", _yaml(tune__reference_in_rungs="maybe"),
     ["tune.reference_in_rungs", "'maybe'", "true or false"]),
    ("grace period past the epochs", _yaml(tune__scheduler={"grace_period": 5}), ["tune.scheduler.grace_period", "5", "<= trial.epochs"]),
    ("huge epochs", _yaml(trial__epochs=10**9), ["trial.epochs", "1000000000", "[1, 10000]"]),
    ("fractional epochs", _yaml(trial__epochs=2.5), ["trial.epochs", "2.5", "integer"]),
    ("huge width", _yaml(trial__width=10**6), ["trial.width", "1000000", "[1, 4096]"]),
    ("huge attack steps", _yaml(trial__attack_steps=10**7), ["trial.attack_steps", "10000000", "[1, 10000]"]),
    ("huge sample count", _yaml(tune__num_samples=10**7), ["tune.num_samples", "10000000", "[1, 100000]"]),
    ("huge max_concurrent", _yaml(tune__max_concurrent=10**9), ["tune.max_concurrent", "1000000000", "[1, 100000]"]),
    ("huge max_failures", _yaml(tune__max_failures=10**6), ["tune.max_failures", "1000000", "[0, 1000]"]),
    ("seed above 2**32-1", _yaml(trial__seed=2**32), ["trial.seed", "4294967296", "[0, 4294967295]"]),
    ("negative seed", _yaml(trial__seed=-1), ["trial.seed", "-1", "[0, 4294967295]"]),
    ("searcher seed above 2**32-1", _yaml(tune__searcher={"seed": 2**40}), ["tune.searcher.seed", "1099511627776"]),
    ("searched seed above 2**32-1", _yaml(search={"seed": {"randint": [0, 2**33]}}), ["search.seed.randint", "8589934592"]),
    ("cpus per trial beyond this machine", _yaml(tune__resources={"cpu": (os.cpu_count() or 1) + 1}),
     ["tune.resources.cpu", "cores", "--address"]),
    ("gpus per trial beyond this machine", _yaml(tune__resources={"gpu": 64}), ["tune.resources.gpu", "64", "GPUs"]),
    ("val_size 0", _yaml(data__val_size=0), ["data.val_size", "0", ">= 1", "validation accuracy is 0"]),
    ("batch larger than the training split", _yaml(trial__batch_size=500), ["trial.batch_size", "500", "150 training images"]),
    ("searched batch larger than the split", _yaml(search={"batch_size": {"choice": [32, 4096]}}),
     ["search.batch_size.choice", "4096", "150 training images"]),
    ("teacher batch larger than the split", _yaml(teachers={"t": {"train": {**GOOD["teachers"]["t"]["train"], "batch_size": 999}}}),
     ["teachers.t.train.batch_size", "999", "150 training images"]),
    ("width for an architecture without one", _yaml(trial__arch="resnet18"), ["trial.width", "4", "resnet18 has no width"]),
    ("teacher width for an architecture without one", _yaml(teachers={"t": {"train": {"arch": "mobilenet_v2", "width": 8}}}),
     ["teachers.t.train.width", "8", "mobilenet_v2 has no width"]),
    ("kl_reduction mean", _yaml(trial__kl_reduction="mean"), ["trial.kl_reduction", "'mean'", "batchmean, paper"]),
    ("tune.metric clean_acc", _yaml(tune__metric="clean_acc"), ["tune.metric", "'clean_acc'", "must be pgd_acc"]),
    ("tune.mode min", _yaml(tune__mode="min"), ["tune.mode", "'min'", "max"]),
    ("equal uniform bounds", _yaml(search__alpha={"uniform": [0.7, 0.7]}), ["search.alpha.uniform", "low < high"]),
    ("empty choice", _yaml(search__alpha={"choice": []}), ["search.alpha.choice", "non-empty"]),
    # --- structure: what YAML makes of text on its own, duplicate keys, odd names
    ("duplicate top-level key", _yaml_text("tune:\n", "tune:\n  seed: 1\ntune:\n"), ["tune", "given twice", "YAML would silently keep"]),
    ("duplicate key in a section", _yaml_text("  epochs: 2\n", "  epochs: 2\n  epochs: 3\n"), ["epochs", "given twice", "remove one"]),
    ("undefined YAML alias", _yaml_text("  epochs: 2\n", "  epochs: *two\n"), ["--space", "not valid YAML at line"]),
    ("experiment is a YAML date", _yaml_text("experiment: bad\n", "experiment: 2024-01-01\n"), ["experiment", "2024", "YAML date"]),
    ("experiment is a YAML bool", _yaml_text("experiment: bad\n", "experiment: yes\n"), ["experiment", "True", "YAML bool"]),
    ("lr: yes", _yaml_text("  epochs: 2\n", "  epochs: 2\n  lr: yes\n"), ["trial.lr", "True", "finite number", "booleans"]),
    ("seed: on", _yaml_text("  epochs: 2\n", "  epochs: 2\n  seed: on\n"), ["trial.seed", "True", "integer", "booleans"]),
    ("method: no", _yaml_text("  method: rslad\n", "  method: no\n"), ["trial.method", "False", "rslad"]),
    ("soft_label_cache as a string", _yaml(trial__soft_label_cache="true"), ["trial.soft_label_cache", "'true'", "true or false"]),
    ("experiment named teachers", _yaml(experiment="teachers"), ["experiment", "'teachers'", "reserved"]),
    ("experiment named like train's folder", _yaml(experiment="bad-train"), ["experiment", "'bad-train'", "reserved", "-train"]),
    ("experiment named like a moved-aside sweep", _yaml(experiment="bad.20240101-120000"), ["experiment", "reserved"]),
    ("experiment that climbs out of runs/", _yaml(experiment="../bad"), ["experiment", "'../bad'", "letters, digits"]),
    ("non-ASCII teacher name", _yaml(teachers={"tè": GOOD["teachers"]["t"]}, trial__teacher="tè"), ["teachers", "'tè'", "ASCII"]),
    ("top level is a list", _space_file(b"- experiment: bad\n"), ["(top level)", "list", "mapping"]),
    ("trial section is a list", _yaml(trial=[1, 2]), ["trial", "[1, 2]", "mapping"]),
    ("domain with two kinds", _yaml(search__alpha={"uniform": [0.5, 1.0], "choice": [0.5]}), ["search.alpha", "one of"]),
    ("searching epochs", _yaml(search={"epochs": {"choice": [1, 2]}}), ["search.epochs", "ASHA's time budget"]),
    # --- files: NaN weights, damaged files, folders that are not ours
    ("NaN in teacher weights", _nonfinite(float("nan")), ["teachers.t.checkpoint", "t.safetensors", "NaN or infinite"]),
    ("inf in a PyTorch teacher file", _nonfinite(float("inf"), ".pt"), ["teachers.t.checkpoint", "t.pt", "NaN or infinite"]),
    ("teacher file whose bytes changed", _teacher_file(_flipped), ["teachers.t.checkpoint", "damaged", "sha256"]),
    ("export of a folder with a broken sweep.json", _sweep_dir("{half", "export"), ["sweep.json", "not a readable JSON file"]),
    ("report of a folder whose sweep.json is not ours", _sweep_dir("[1, 2]", "report"), ["experiment", "not rslad-tune's"]),
    ("compare a sweep whose checkpoint is truncated", _sweep_dir(json.dumps({"experiment": "old"}), "compare", trial=True),
     ["checkpoint", "best.safetensors", "not a readable safetensors file"]),
    ("evaluate a folder with a foreign config.json", _foreign_student, ["path", "model", "not an exported student"]),
    ("evaluate a file", lambda d: [(d / "f.txt").write_text("x"), "evaluate", str(d / "f.txt")][1:], ["path", "f.txt", "not a folder"]),
    ("resume a folder that is no sweep", _args("resume", "nowhere"), ["experiment", "nowhere", "sweep.json"]),
    ("runs_dir that is a file", _with_yaml("--runs-dir", "space.yaml"), ["runs_dir", "space.yaml", "is a file"]),
    # --- CLI counts
    ("compare with a negative --n-aa", lambda d: ["compare", str(d), "--n-aa", "-5"], ["--n-aa", "'-5'", "non-negative"]),
    ("compare with a negative --aa-seed", lambda d: ["compare", str(d), "--aa-seed", "-1"], ["--aa-seed", "'-1'", "seed"]),
    ("compare on an unknown device", lambda d: ["compare", str(d), "--device", "tpu"], ["--device", "'tpu'", "choose from"]),
    ("compare an unknown attack", lambda d: ["compare", str(d), "--attacks", "clean,bogus"], ["--attacks", "clean,bogus", "subset of"]),
    ("evaluate with a seed above 2**32-1", _args("evaluate", "x", "--seed", str(2**32)), ["--seed", "4294967296", "4294967295"]),
    ("evaluate with a zero --batch-size", _args("evaluate", "x", "--batch-size", "0"), ["--batch-size", "'0'", "positive"]),
    ("evaluate with --n-aa 1e3", _args("evaluate", "x", "--n-aa", "1e3"), ["--n-aa", "'1e3'", "non-negative integer or 'all'"]),
    ("evaluate an unknown attack", _args("evaluate", "x", "--attacks", "clean,bogus"), ["--attacks", "bogus"]),
    ("zoo build with zero threads", _args("zoo", "build", "x", "--threads", "0"), ["--threads", "'0'", "positive"]),
    ("--set of a seed out of range", _with_yaml("--set", f"seed={2**32}"), ["trial.seed", "4294967296", "4294967295"]),
    ("--set of a huge width", _with_yaml("--set", "width=100000"), ["trial.width", "100000", "[1, 4096]"]),
    ("--set with a key given twice", _with_yaml("--set", "milestones={a: 1, a: 2}"), ["a", "given twice"]),
    # --- input that cost minutes and gigabytes, or ended in a traceback: refused in one line
    ("YAML alias bomb under an unknown key", _yaml_text("tune:\n", _alias_bomb(6) + "tune:\n"),
     ["space.yaml", "lol.a5", "aliases expanded", "at most 100,000 values"]),
    ("space file over 1 MB", _space_file(b"x" * 2_000_001), ["--space", "x.yaml", "2,000,001 bytes", "at most 1,000,000 bytes"]),
    ("YAML nested 10,000 deep", _yaml_text("  epochs: 2\n", f"  epochs: 2\n  lr: {_nested(10_000)}\n"),
     ["space.yaml", "trial.lr", "nested over 50 levels deep", "at most 50 levels"]),
    ("integer of 5001 digits", _yaml_text("  epochs: 2\n", f"  epochs: {HUGE_INT}\n"),
     ["trial.epochs", "5001 digits", "10000000000000000000…", "at most 30 digits"]),
    ("integer of 5001 digits in a domain", _yaml_text("  alpha:\n", f"  seed: {{randint: [0, {HUGE_INT}]}}\n  alpha:\n"),
     ["search.seed.randint", "5001 digits"]),
    ("--set of an integer of 5001 digits", _with_yaml("--set", f"epochs={HUGE_INT}"), ["--set epochs", "5001 digits"]),
    ("teacher checkpoint of an unknown ~user", _yaml(teachers={"t": {"checkpoint": "~nosuchuser_rslad/t.safetensors",
                                                                      "arch": "small_cnn"}}),
     ["teachers.t.checkpoint", "'~nosuchuser_rslad/t.safetensors'", "user of this machine"]),
    ("data_dir of an unknown ~user", _yaml(data__dataset="fashion_mnist", data__data_dir="~nosuchuser_rslad/data"),
     ["data.data_dir", "'~nosuchuser_rslad/data'", "user of this machine"]),
    ("--data-dir of an unknown ~user", lambda d: _yaml(data__dataset="fashion_mnist")(d) + ["--data-dir", "~nosuchuser_rslad/data"],
     ["data.data_dir", "user of this machine"]),
    ("--space is a directory", lambda d: ["--space", str(d)], ["--space", "is a directory, not a file"]),
    # --- issue 27: every check before anything moves or any teacher is built
    ("IPv6 Ray address nobody answers", _with_yaml("--address", "[::1]:9"), ["--address", "[::1]:9", "no Ray head answers"]),
    ("tracking store that is not a database", lambda d: [(d / "junk.db").write_bytes(b"not a database" * 10)]
     and _with_yaml("--tracking-uri", "sqlite:///junk.db")(d), ["--tracking-uri", "junk.db", "not an SQLite database"]),
    ("tracking server nobody answers", _with_yaml("--tracking-uri", "http://127.0.0.1:9"),
     ["--tracking-uri", "http://127.0.0.1:9", "no MLflow server answers"]),
    ("runs/teachers is a file", lambda d: [(d / "runs").mkdir(), (d / "runs" / "teachers").write_text("x")]
     and _yaml()(d), ["runs_dir", "teachers", "is a file where the teachers' folder goes"]),
    ("the lock's path is a folder", lambda d: (d / "runs" / ".bad.lock").mkdir(parents=True) or _yaml()(d),
     ["runs_dir", ".bad.lock", "is a folder where the experiment's lock file goes"]),
    ("runs_dir below a file", _with_yaml("--runs-dir", "space.yaml/runs"), ["runs_dir", "space.yaml", "is a file"]),
    ("evaluate --out below a file", lambda d: [(d / "f.txt").write_text("x"), *_tampered_export()(d), "--out", "f.txt/e.json"][1:],
     ["--out", "f.txt/e.json", "is a file, not a folder"]),
    ("evaluate --out in a folder that takes no file (/proc: os.access says yes to root)",
     lambda d: ["evaluate", "x", "--out", "/proc/e.json"], ["--out", "/proc/e.json", "cannot be written"]),
    # --- issue 27: a tampered sweep folder, checked through the YAML's rules before anything is built
    ("export config.json with an unknown arch", _tampered_export({"arch": "resnet999"}), ["config.json", "arch", "'resnet999'", "small_cnn"]),
    ("export config.json with an absurd width", _tampered_export({"width": 10**9}), ["config.json", "width", "1000000000", "[1, 4096]"]),
    ("export config.json with a width for resnet18", _tampered_export({"arch": "resnet18", "width": 8}), ["width", "resnet18 has no width"]),
    ("export config.json with 10**6 classes", _tampered_export({"num_classes": 10**6}), ["num_classes", "[1, 100000]"]),
    ("export config.json that is a list", lambda d: (_tampered_export()(d), (d / "runs/old/best/config.json").write_text('["trial"]'))[0],
     ["path", "not an exported student"]),
    ("export config.json whose trial has an absurd width", _tampered_export({"trial": {**GOOD_TRIAL, "width": 10**12}}),
     ["config.json", "trial.width", "1000000000000", "[1, 4096]"]),
    ("metrics.json not an object", _tampered_export(metrics=[1, 2]), ["metrics.json", "[1, 2]", "JSON object"]),
    ("metrics.json with a string epoch", _tampered_export(metrics={"epoch": "2"}), ["metrics.json", "epoch", "'2'", "finite number"]),
    ("result.json with strings for numbers", _tampered_trial({"trial_id": "1", "best_pgd_acc": "0.5", "epoch": 2, "best_epoch": 2}),
     ["result.json", "best_pgd_acc", "'0.5'", "finite number"]),
    ("result.json with a fractional epoch", _tampered_trial({"trial_id": "1", "best_pgd_acc": 0.5, "epoch": 2.5, "best_epoch": 2}),
     ["result.json", "epoch", "2.5", "whole number"]),
    ("trial.json with an empty history", _tampered_trial(trial_json={"history": []}), ["trial.json", "history", "must hold epoch 2"]),
    ("compare of a trial.json with an empty history", _tampered_trial(trial_json={"history": []}, verb="compare"),
     ["trial.json", "history", "must hold epoch 2"]),
    ("resume of a checkpoint with a flipped bit", _damaged_resume,
     ["--resume", "checkpoint_000002/model.safetensors", "damaged", "sha256", "no earlier good checkpoint"]),
    ("trial.json with a history that is a string", _tampered_trial(trial_json={"history": "x"}), ["trial.json", "history", "list"]),
    ("trial.json whose trial has an absurd width", _tampered_trial(trial_json={"trial": {**GOOD_TRIAL, "width": 10**9}}, verb="compare"),
     ["trial.json", "trial.width", "1000000000", "[1, 4096]"]),
    ("unknown report objective", _yaml(report={"objective": "robust"}), ["report.objective", "'robust'", "pgd, clean, balanced"]),
    ("clean weight without the balanced objective", _yaml(report={"clean_weight": 0.3}),
     ["report.clean_weight", "0.3", "only objective balanced", "objective is pgd"]),
    ("clean weight above 1", _yaml(report={"objective": "balanced", "clean_weight": 1.5}), ["report.clean_weight", "1.5", "[0, 1]"]),
    # few labels (data.labelled) and the pseudo-label baseline
    ("labelled more than the split", _yaml(data__labelled=151), ["data.labelled", "151", "at most the 150 training images"]),
    ("labelled under 10", _yaml(data__labelled=9), ["data.labelled", "9", ">= 10", "cannot cover the classes"]),
    ("labelled not an integer", _yaml(data__labelled=0.5), ["data.labelled", "0.5", "integer"]),
    ("labelled with a label method and no teacher", _yaml(data__labelled=100, trial__method="sat", teachers=..., trial__teacher=...),
     ["data.labelled", "100", "'sat' needs a label on every image", "train_subset 150"]),
    ("pseudo baseline without labelled", _yaml(teachers__p={"baseline": {"pseudo": "sat", "teacher": "t"}}),
     ["teachers.p.baseline.pseudo", "needs data.labelled"]),
    ("pseudo baseline naming an unknown teacher", _yaml(data__labelled=100, teachers__p={"baseline": {"pseudo": "sat", "teacher": "u"}}),
     ["teachers.p.baseline.teacher", "'u'", "one of: t"]),
    ("pseudo baseline naming another baseline", _yaml(data__labelled=100, teachers__n={"baseline": "sat"},
                                                      teachers__p={"baseline": {"pseudo": "sat", "teacher": "n"}}),
     ["teachers.p.baseline.teacher", "'n'", "one of: t"]),
    ("pseudo baseline with an unknown key", _yaml(data__labelled=100, teachers__p={"baseline": {"pseudo": "sat", "labeller": "t"}}),
     ["teachers.p.baseline", "pseudo: sat, teacher: NAME"]),
    ("pseudo baseline with a method that needs a teacher", _yaml(data__labelled=100, teachers__p={"baseline": {"pseudo": "rslad"}}),
     ["teachers.p.baseline.pseudo", "'rslad'", "sat, trades, mart"]),
    ("a zoo teacher that saw every label, in a few-label sweep",
     _yaml(data={"dataset": "fashion_mnist", "train_subset": 3000, "val_size": 500, "labelled": 1000},
           teachers={"z": {"zoo": "fashion_mnist/sat_w8"}}, trial__teacher="z"),
     ["teachers.z.zoo", "fashion_mnist/sat_w8", "must have seen only the sweep's labelled images"]),
    ("trial.json whose trial has an unknown arch", _tampered_trial(trial_json={"trial": {**GOOD_TRIAL, "arch": "vit_huge"}}),
     ["trial.json", "trial.arch", "'vit_huge'"]),
    ("width on a checkpoint teacher whose arch has none", lambda d: [save_weights(build_model("resnet18", 1, 10), d / "t.safetensors"),
     *_yaml(teachers={"t": {"checkpoint": "t.safetensors", "arch": "resnet18", "width": 8}})(d)][1:],
     ["teachers.t.width", "8", "resnet18 has no width"]),
    ("randint with low > high", _yaml(search={"attack_steps": {"randint": [4, 3]}}), ["search.attack_steps.randint", "low <= high"]),
    # issue 36: a path that is there but is no regular file is named for what it is, not "file not found"
    ("--space is a FIFO", lambda d: os.mkfifo(d / "x.yaml") or ["--space", "x.yaml"], ["--space", "x.yaml", "named pipe (FIFO)"]),
    ("--space is /dev/zero", _args("--space", "/dev/zero"), ["--space", "/dev/zero", "is a device, not a regular file"]),
    ("teacher checkpoint that is a folder", lambda d: (d / "t.safetensors").mkdir() or _yaml(
        teachers={"t": {"checkpoint": "t.safetensors", "arch": "small_cnn"}})(d), ["teachers.t.checkpoint", "is a directory, not a file"]),
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
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")
                   if not (p.name.endswith(".lock") and p.stat().st_size == 0))  # an experiment's lock, released
    assert after == before, set(after) ^ set(before)  # nothing written: no runs/, no mlflow.db, no teacher
    assert not Path("pwned").exists()


def test_the_table_is_large_enough_and_the_good_yaml_passes_the_checks(tmp_path, monkeypatch):
    assert len(ROWS) >= 87
    monkeypatch.chdir(tmp_path)
    from rslad_tune.cli import _load, _parser

    _yaml()(tmp_path)
    spec = _load(_parser().parse_args(["tune", "--space", "space.yaml"]))
    assert spec.experiment == "bad" and not (tmp_path / "runs").exists()


# legal input that is likely a mistake: the command goes on, after one warning line on stderr
WARN_ROWS = [
    ("max_concurrent beyond this machine", _yaml(tune__max_concurrent=1000),
     ["tune.max_concurrent", "1000", "fit on this machine", "the others wait"]),
    ("grace period equal to the epochs", _yaml(tune__scheduler={"grace_period": 2}),
     ["tune.scheduler.grace_period", "2", "ASHA stops no trial early"]),
    ("fewer samples than teachers searched", _yaml(teachers={"t": GOOD["teachers"]["t"], "u": GOOD["teachers"]["t"]},
                                                   search__teacher={"choice": ["t", "u"]}, trial__teacher=..., tune__num_samples=1),
     ["tune.num_samples", "1", "fewer than the 2 teachers"]),
]


@pytest.mark.parametrize("make,fragments", [r[1:] for r in WARN_ROWS], ids=[r[0] for r in WARN_ROWS])
def test_likely_mistakes_give_one_warning_line_and_write_nothing(make, fragments, tmp_path, monkeypatch, capsys):
    from rslad_tune.cli import _load, _parser

    monkeypatch.chdir(tmp_path)
    argv = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    _load(_parser().parse_args(["tune", *argv]))  # every check a sweep makes before it starts
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rslad-tune: warning: "), err
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"
    assert sorted(tmp_path.rglob("*")) == before


def test_yaml_anchors_and_merge_keys_are_accepted(tmp_path):
    """Aliases repeat a section (one teacher recipe for two teachers); a key beside a merge overrides it."""
    from rslad_tune.sweep.spec import load_sweep

    text = yaml.safe_dump({k: v for k, v in GOOD.items() if k != "teachers"}) + (
        "teachers:\n  t: {train: &recipe {method: sat, arch: small_cnn, width: 4, epochs: 1}}\n"
        "  u: {train: {<<: *recipe, width: 6}}\n")
    (tmp_path / "space.yaml").write_text(text)
    spec = load_sweep(tmp_path / "space.yaml")
    assert spec.teachers["t"].args["train"].width == 4 and spec.teachers["u"].args["train"].width == 6
    assert spec.teachers["u"].args["train"].epochs == 1


@pytest.mark.parametrize("where", ["runs_dir", "--runs-dir"])
def test_runs_dir_of_an_unknown_user_is_one_line(where, tmp_path, monkeypatch):
    """runs_dir was used as written: `~nosuchuser/runs` became a folder named so in the cwd, after training."""
    from rslad_tune.cli import _load, _parser
    from rslad_tune.trial.errors import SpecError

    monkeypatch.chdir(tmp_path)
    argv = _yaml(**({"runs_dir": "~nosuchuser_rslad/runs"} if where == "runs_dir" else {}))(tmp_path)
    argv += ["--runs-dir", "~nosuchuser_rslad/runs"] if where == "--runs-dir" else []
    with pytest.raises(SpecError, match=r"runs_dir: '~nosuchuser_rslad/runs' is not allowed; ~name must be a user"):
        _load(_parser().parse_args(["tune", *argv]))
    assert not (tmp_path / "~nosuchuser_rslad").exists()


def test_randint_with_equal_bounds_is_a_constant(tmp_path, monkeypatch):
    """randint's bounds are inclusive here, so [3, 3] is the constant 3 (uniform's [0.7, 0.7] stays refused)."""
    from rslad_tune.cli import _load, _parser

    monkeypatch.chdir(tmp_path)
    argv = _yaml(search={"alpha": {"uniform": [0.5, 1.0]}, "attack_steps": {"randint": [3, 3]}})(tmp_path)
    spec = _load(_parser().parse_args(["tune", *argv]))
    assert spec.search["attack_steps"].args == [3, 3] and spec.search["attack_steps"].center() == 3


def test_an_error_shows_a_short_head_of_a_huge_value():
    """A value is shown by its repr's head (a string: head and tail), built without formatting all of it."""
    from rslad_tune.trial.yaml_loader import load_yaml
    from rslad_tune.trial.errors import SpecError

    lol = ["lol"] * 9
    for _ in range(6):  # 9**7 values: repr() makes 34 MB of them (9**13, terabytes, is refused by the loader)
        lol = [lol] * 9
    for value, shown in [(lol, "[[[[[[['lol', 'lol'"), (list(range(10**6)), "[0, 1, 2, 3"), (10**5000, "5001 digits"),
                         ("/a/" + "b" * 10**6 + "/best.safetensors", "/best.safetensors'")]:
        msg = str(SpecError("trial.lr", value, "must be a finite number"))
        assert len(msg) < 400 and shown in msg and msg.endswith("is not allowed; must be a finite number"), msg
    with pytest.raises(SpecError, match="an alias at line 1 inside the section it names"):
        load_yaml("a: &a [1, *a]")  # a recursive alias: a value that contains itself
    with pytest.raises(SpecError, match="b: 'nested over 50 levels deep at line 2, aliases expanded'"):
        load_yaml(f"a: &a {_nested(30)}\nb: {'[' * 25}*a{']' * 25}\n")  # 25 levels holding 30 through an alias
    assert load_yaml("a: " + _nested(45)) == {"a": load_yaml(_nested(45))}  # 46 levels: allowed


@pytest.mark.parametrize("verb", [["--space"], ["train", "--space"], ["teachers", "rank", "--space"]])
def test_the_worst_inputs_are_refused_in_seconds_and_megabytes(tmp_path, verb):
    """Each in a fresh process: a billion laughs (9**11 values), a 50 MB file, 10,000 levels, a 5001-digit
    integer, a folder. Before their caps they took minutes and gigabytes. They are refused before torch is
    imported (~650 MB on its own here), so the whole process stays under 500 MB (VmHWM: ru_maxrss would carry
    the forking pytest's peak across exec); 15 s is a timeout, not a timing."""
    good = yaml.safe_dump(GOOD)
    inputs = {"bomb.yaml": good + _alias_bomb(10), "big.yaml": "x" * 50_000_000,
              "deep.yaml": good + f"junk: {_nested(10_000)}\n", "int.yaml": good.replace("  epochs: 2\n", f"  epochs: {HUGE_INT}\n")}
    for name, text in inputs.items():
        (tmp_path / name).write_text(text)
    for name in [*inputs, "."]:
        result, lines, stderr = _in_a_fresh_process([*verb, name], tmp_path, timeout=15)
        assert result["rc"] == 2 and len(lines) == 1 and len(lines[0]) < 400, (name, stderr)
        assert not result["torch"] and result["peak_kib"] < 500 * 1024, (name, result)


def _in_a_fresh_process(argv: list[str], cwd: Path, timeout: float) -> tuple[dict, list[str], str]:
    """`rslad-tune argv` in a new Python: ({rc, peak_kib: its VmHWM, torch: imported?}, its error lines, stderr).
    VmHWM, not ru_maxrss: that would carry the forking pytest's peak across exec."""
    import subprocess
    import sys

    env = {**os.environ, "RSLAD_TUNE_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = f"""
import json, sys
from rslad_tune.cli import main
try:
    rc = main({argv!r})
except SystemExit as e:
    rc = e.code
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"rc": rc, "peak_kib": peak, "torch": "torch" in sys.modules}}))
"""
    proc = subprocess.run([sys.executable, "-c", child], cwd=cwd, env=env, text=True, capture_output=True,
                          timeout=timeout, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rslad-tune: error: ")]
    return json.loads(proc.stdout.splitlines()[-1]), lines, proc.stderr


# Refused without torch (~630 MB on its own here): the YAML's values, the places a sweep writes, the tracking store,
# the cluster (registries and schema are torch-free: trial/lazy.py), and a sweep folder's JSON files before any model
# is built. Each row of ROWS named here runs in a fresh process that must end with torch never imported.
NO_TORCH_ROWS = [
    "zero samples", "unknown top key", "unknown trial key", "unknown model", "unknown method",
    "width for an architecture without one", "runs_dir that is a file", "runs_dir below a file", "runs/teachers is a file",
    "the lock's path is a folder", "tracking server nobody answers", "tracking store that is not a database",
    "unreachable Ray address",
    # issue 27's tampered sweep folders: validated before anything imports torch
    "export config.json with an unknown arch", "export config.json with an absurd width",
    "export config.json with a width for resnet18", "export config.json with 10**6 classes",
    "export config.json that is a list", "export config.json whose trial has an absurd width",
    "metrics.json not an object", "metrics.json with a string epoch", "result.json with strings for numbers",
    "result.json with a fractional epoch", "trial.json with an empty history", "trial.json with a history that is a string",
    "trial.json whose trial has an absurd width", "trial.json whose trial has an unknown arch",
    "report of a folder whose sweep.json is not ours", "export of a folder with a broken sweep.json",
    # and the last three that needed torch to find the fault: the data's files, a checkpoint's digest, a cut history
    "corrupt .gz in the data dir", "compare of a trial.json with an empty history", "resume of a checkpoint with a flipped bit",
]
_BY_NAME = {r[0]: r[1:] for r in ROWS}
NO_TORCH = [(name, *_BY_NAME[name]) for name in NO_TORCH_ROWS] + [
    ("runs_dir of an unknown ~user", _yaml(runs_dir="~nosuchuser_rslad/x"), ["runs_dir", "~nosuchuser_rslad/x", "user of this machine"]),
]


@pytest.mark.parametrize("make,fragments", [r[1:] for r in NO_TORCH], ids=[r[0] for r in NO_TORCH])
def test_bad_input_is_refused_without_importing_torch(make, fragments, tmp_path):
    """In a fresh process (VmHWM of its own: ru_maxrss would carry the forking pytest's peak across exec): exit 2,
    one error line, torch never imported, the whole process under 500 MB."""
    result, lines, stderr = _in_a_fresh_process(make(tmp_path), tmp_path, timeout=60)
    assert result["rc"] == 2 and len(lines) == 1, stderr
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"
    assert not result["torch"], ("torch was imported", lines[0])
    assert result["peak_kib"] < 500 * 1024, result
