"""One registry shape for methods, architectures and datasets: each kind is added by a module of its own and one
registry line (here: a throw-away module in tmp_path, registered for the test only), and `rslad-tune train` runs it.
An unknown name is one SpecError line that lists the allowed names, those registered at runtime included."""
import importlib
import json
import sys
import textwrap

import pytest
import yaml

from rslad_tune.cli import main
from rslad_tune.trial.config import check_trial_value
from rslad_tune.trial.data import DATASETS
from rslad_tune.trial.errors import SpecError
from rslad_tune.trial.methods import METHODS
from rslad_tune.trial.models import REGISTRY, Arch
from rslad_tune.trial.registry import Registry

TRIAL = {"method": "natural", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1, "eval_steps": 1,
         "batch_size": 50, "num_threads": 1}
DATA = {"dataset": "synthetic", "train_subset": 200, "test_subset": 40, "val_size": 40}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module's trainings (a new SQLite store takes seconds to create)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'm.db'}"


@pytest.fixture
def new_module(tmp_path, monkeypatch):
    """write(name, source): a module of the test alone, importable while the test runs."""
    # (not syspath_prepend: it imports pkg_resources' namespace fix-up, broken once a teacher test loaded timm)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    importlib.invalidate_caches()
    names = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def _train(tmp_path, monkeypatch, store, data=None, **trial) -> dict:
    """`rslad-tune train` of a tiny trial (no teacher); returns the out folder's trial.json."""
    monkeypatch.chdir(tmp_path)
    space = {"experiment": "reg", "data": {**DATA, **(data or {})}, "trial": {**TRIAL, **trial}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space))
    assert main(["train", "--space", "s.yaml", "--out", "out", "--tracking-uri", store]) == 0
    return json.loads((tmp_path / "out" / "trial.json").read_text())


def test_a_method_in_its_own_module_trains(new_module, tmp_path, monkeypatch, store):
    new_module("halved_ce", """
        import torch.nn.functional as F

        from rslad_tune.trial.methods import Method

        class HalvedCE(Method):
            name = "halved_ce"
            adversarial = False
            uses_clean = True
            steps = 0

            def outer_loss(self, clean_logits, adv_logits, batch):
                HalvedCE.steps += 1
                return 0.5 * F.cross_entropy(clean_logits.float(), batch.y)
        """)
    monkeypatch.setitem(METHODS, "halved_ce", "halved_ce:HalvedCE")  # the one registry line
    trial = _train(tmp_path, monkeypatch, store, method="halved_ce")
    assert trial["trial"]["method"] == "halved_ce" and len(trial["history"]) == 1
    assert sys.modules["halved_ce"].HalvedCE.steps > 0  # its loss trained the student
    assert check_trial_value("method", "halved_ce") == "halved_ce"


def test_a_dataset_in_its_own_module_trains(new_module, tmp_path, monkeypatch, store):
    new_module("dots_data", """
        from rslad_tune.trial.data import synthetic
        from rslad_tune.trial.datasets import Dataset

        def load(data_dir, train_subset, test_subset):
            return synthetic((3, 12, 12), 200, 40, num_classes=4, seed=7)

        DOTS = Dataset("dots", load, shape=(3, 12, 12), num_classes=4, generated_by="dots_data.load")
        """)
    monkeypatch.setitem(DATASETS, "dots", "dots_data:DOTS")  # the one registry line
    trial = _train(tmp_path, monkeypatch, store, data={"dataset": "dots"})
    assert trial["trial"]["dataset"] == "dots"
    from safetensors import safe_open
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert f.get_tensor("features.0.weight").shape[1] == 3 and f.get_tensor("classifier.2.weight").shape[0] == 4
    assert json.loads((tmp_path / "out" / "test_metrics.json").read_text())["last"]["test_n"] == 40
    # what the preflight, the data source and MLflow's dataset record ask of it comes from its record
    from rslad_tune.sweep.mlflow_data import split_records
    from rslad_tune.trial.config import TrialConfig
    from rslad_tune.trial.data import data_source, load_data, prepare_data

    cfg = TrialConfig(dataset="dots", val_size=40)
    prepare_data("dots", None)
    assert data_source("dots", None) is None
    records = split_records(cfg, load_data(cfg, "cpu"))
    assert {r["source_type"] for r in records} == {"code"} and "dots_data.load" in records[0]["source"]


def test_an_architecture_in_its_own_module_trains(new_module, tmp_path, monkeypatch, store):
    new_module("flat_net", """
        from torch import nn

        class FlatNet(nn.Module):
            widths = []

            def __init__(self, in_channels, num_classes, width=3):
                super().__init__()
                FlatNet.widths.append(width)
                self.body = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(in_channels * 16, width),
                                          nn.ReLU(), nn.Linear(width, num_classes))

            def forward(self, x):
                return self.body(x)
        """)
    monkeypatch.setitem(REGISTRY, "flat_net", Arch("flat_net:FlatNet", ("width",)))  # the one registry line
    trial = _train(tmp_path, monkeypatch, store, arch="flat_net", width=5)
    assert trial["trial"]["arch"] == "flat_net" and trial["trial"]["width"] == 5
    assert set(sys.modules["flat_net"].FlatNet.widths) == {5}  # every model built took the YAML's width
    from safetensors import safe_open
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert f.get_tensor("body.2.weight").shape == (5, 16)
    # a setting the arch declares is checked like width is for the built-in ones
    with pytest.raises(SpecError, match="resnet18 has no width .only small_cnn, flat_net takes one"):
        from rslad_tune.trial.config import make_trial_config
        make_trial_config({"arch": "resnet18", "width": 4})


@pytest.mark.parametrize("registry,key", [(METHODS, "method"), (DATASETS, "dataset"), (REGISTRY, "arch")])
def test_an_unknown_name_is_one_line_naming_the_allowed_ones(registry, key, monkeypatch):
    monkeypatch.setitem(registry, "added_later", "nowhere_module:Nothing")  # never imported: only its name is read
    with pytest.raises(SpecError) as err:
        registry["no_such_name"]
    assert str(err.value) == f"{key}: 'no_such_name' is not allowed; allowed: {', '.join(registry)}"
    assert str(err.value).endswith(", added_later")
    with pytest.raises(SpecError) as err:
        check_trial_value(key, "no_such_name", label=f"trial.{key}")
    assert str(err.value).startswith(f"trial.{key}: 'no_such_name' is not allowed; must be one of ")
    assert "added_later" in str(err.value) and "\n" not in str(err.value)


def test_the_cli_refuses_an_unknown_dataset_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(DATASETS, "added_later", "nowhere_module:NOTHING")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"experiment": "reg", "data": {"dataset": "dotz"}, "trial": TRIAL}))
    assert main(["train", "--space", "s.yaml", "--out", "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.dataset: 'dotz' is not allowed; must be one of fashion_mnist" in err and "added_later" in err
    assert len(err.splitlines()) == 1


def test_register_as_decorator_call_and_lazy_location():
    things = Registry("thing")

    @things.register()
    class First:
        name = "first"

    @things.register("second")
    def second():
        return 2

    things.register("third", "os.path:join")
    assert things.register(First) is First and list(things) == ["first", "second", "third"]
    assert things["second"] is second and dict.__getitem__(things, "third") == "os.path:join"
    import os.path
    assert things["third"] is os.path.join and dict.__getitem__(things, "third") is os.path.join  # resolved once
    assert things.get("fourth") is None and dict(things.items())["third"] is os.path.join
