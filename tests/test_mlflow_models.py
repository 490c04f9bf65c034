"""Teachers as MLflow logged models: a zoo teacher with its zoo name, source and weights digest, its weights and
card as artifacts, logged once per experiment (found again by digest)."""
from pathlib import Path

from mlflow.tracking import MlflowClient

import rslad_tune
from rslad_tune.sweep.mlflow_models import DIGEST_TAG, log_teachers
from rslad_tune.teachers.folders import read_card
from rslad_tune.teachers.source import TeacherSpec
from rslad_tune.trial.files import file_digest

ZOO = Path(rslad_tune.__file__).parent / "teacher_zoo" / "fashion_mnist" / "sat_w8"


def test_a_zoo_teacher_is_one_logged_model_with_its_name_and_digest(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp).info.run_id
    spec = TeacherSpec("z", "zoo", {"zoo": "fashion_mnist/sat_w8"})
    logs = []
    from rslad_tune.teachers.resolved import ResolvedTeacher
    from rslad_tune.teachers.source import Source
    from rslad_tune.teachers.sources import read_teacher

    zoo = read_teacher("z", ZOO, "zoo")  # the sweep's records (a folder that vanished since: one line, the rest logged)
    ids = log_teachers(client, exp, run, {"z": zoo, "gone": ResolvedTeacher("gone", tmp_path / "gone", Source())}, {"z": read_card(ZOO)},
                       {"z": spec}, logs.append)
    assert set(ids) == {"z"} and len(logs) == 1 and logs[0].startswith("teacher gone: not logged")  # one line
    model = client.get_logged_model(ids["z"])
    assert model.name == "teacher-z" and model.source_run_id == run
    assert model.tags[DIGEST_TAG] == file_digest(ZOO / "model.safetensors")
    assert model.tags["teacher_source"] == "zoo" and model.tags["teacher_zoo"] == "fashion_mnist/sat_w8"
    assert model.params["params"] == str(read_card(ZOO)["params"])
    assert {a.path for a in client.list_logged_model_artifacts(model.model_id)} == {"model.safetensors", "config.json",
                                                                                    "card.json"}
    again = log_teachers(client, exp, client.create_run(exp).info.run_id, {"z": zoo}, {}, {"z": spec}, logs.append)
    assert again == ids and len(client.search_logged_models([exp])) == 1  # logged once


def test_a_sweep_shorter_than_one_sampling_interval_still_has_system_metrics(tmp_path):
    """MLflow's monitor drops the samples of its last unfinished interval; the sweep logs them when it stops."""
    from rslad_tune.sweep.mlflow_data import start_system_metrics, stop_system_metrics

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("short")).info.run_id
    monitor = start_system_metrics(uri, run_id, print, interval=600.0)
    stop_system_metrics(monitor, print)
    assert "system/cpu_utilization_percentage" in client.get_run(run_id).data.metrics
