"""A real Ray Tune sweep of two tiny synthetic trials, read back from MLflow and from the export."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient


@pytest.fixture
def sweep(finished_sweep):
    """(folder, the sweep's stdout): conftest's finished sweep, shared with tests/test_copied_sweep.py."""
    return finished_sweep


def test_mlflow_holds_parent_and_one_child_per_trial(sweep):
    d, _ = sweep
    client = MlflowClient(f"sqlite:///{d / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("rslad_tune.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("rslad_tune.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.status == "FINISHED"
    tags = parents[0].data.tags  # where the sweep came from, in MLflow's own source tags
    assert tags["mlflow.source.name"] == "rslad-tune" and tags["rslad_tune.command"].startswith("rslad-tune --space")
    assert len(tags.get("mlflow.source.git.commit", "")) == 40 and tags["rslad_tune.version"]
    space = client.download_artifacts(parents[0].info.run_id, "space.yaml", str(d))
    assert yaml.safe_load(Path(space).read_text())["experiment"] == "tiny"
    alphas = set()
    for c in children:
        assert c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert re.fullmatch(r"[0-9a-f]{8}-t[12]-a0\.\d\d-e0\.\d{3}", c.info.run_name), c.info.run_name  # readable
        assert c.info.status == "FINISHED"
        assert c.data.params["method"] == "rslad" and c.data.params["teacher"] in ("t1", "t2")
        assert int(c.data.params["teacher_params"]) > 0 and 0 <= float(c.data.params["teacher_pgd20_acc"]) <= 1
        if c.data.params["teacher"] == "t1":  # its card has AutoAttack on 16 images
            assert 0 <= float(c.data.params["teacher_aa_acc"]) <= float(c.data.params["teacher_pgd20_acc"]) + 1 / 16
        alphas.add(c.data.params["alpha"])
        assert 0.5 <= float(c.data.params["alpha"]) <= 1.0
        hist = client.get_metric_history(c.info.run_id, "val_pgd_acc")
        assert sorted(m.step for m in hist) == list(range(1, int(c.data.tags["epochs_run"]) + 1))
        assert all(0 <= m.value <= 1 for m in hist)
        arts = [a.path for a in client.list_artifacts(c.info.run_id, "checkpoint")]
        assert "checkpoint/model.safetensors" in arts
    # a teacher search starts with one trial per teacher (other keys at their domain's centre)
    assert {c.data.params["teacher"] for c in children} == {"t1", "t2"} and alphas == {"0.75"}
    png = d / "runs" / "tiny" / "pgd_per_epoch.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pgd_per_epoch.png" in [a.path for a in client.list_artifacts(parents[0].info.run_id)]


def test_export_is_loadable_in_a_new_process_and_matches_metrics(sweep):
    d, out = sweep
    best = d / "runs" / "tiny" / "best"
    metrics = json.loads((best / "metrics.json").read_text())
    assert {"test_clean_acc", "test_pgd_acc", "val_pgd_acc", "trial_id"} <= set(metrics)
    code = f"""
import json, torch, rslad_tune
from rslad_tune.trial.data import load_splits
from rslad_tune.trial.robustness import clean_and_pgd
m = rslad_tune.load_student({str(best)!r})
s = load_splits('synthetic', train_subset=600, test_subset=200, val_size=100)
print(json.dumps(clean_and_pgd(m, s.test_x, s.test_y, 0.1, 0.025, 3)))
"""
    res = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert res["clean_acc"] == pytest.approx(metrics["test_clean_acc"], abs=1e-9)
    assert res["pgd_acc"] == pytest.approx(metrics["test_pgd_acc"], abs=0.02)  # same seed; float noise only
    assert "stopped" in out and "exported the best student" in out
    assert {"model.pt", "model.onnx"} <= {p.name for p in best.iterdir()}  # tests/test_export_formats.py checks them
    mv = MlflowClient(f"sqlite:///{d / 'runs' / 'mlflow.db'}").get_model_version_by_alias("tiny-student", "champion")
    assert mv.run_id == metrics["mlflow_run_id"] and float(mv.tags["test_pgd_acc"]) == metrics["test_pgd_acc"]


def test_the_sweep_reads_as_mlflow_and_optuna_users_expect(sweep, tmp_path):
    """Datasets, system metrics, teachers as logged models, the answer on the parent run, ASHA's stops PRUNED in
    optuna.db, the sweep's plots; the registered student fine-tunes in a process without rslad_tune."""
    import getpass

    import numpy as np
    import optuna
    import torch
    from test_export_formats import FINE_TUNE

    import rslad_tune

    d, out = sweep
    exp_dir = d / "runs" / "tiny"
    uri = f"sqlite:///{d / 'runs' / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    runs = [client.get_run(r.info.run_id) for r in client.search_runs([exp.experiment_id])]  # get_run: model inputs too
    parent = next(r for r in runs if r.data.tags.get("rslad_tune.kind") == "sweep")
    children = [r for r in runs if r.data.tags.get("rslad_tune.kind") == "trial"]
    teachers = {m.tags["teacher"]: m for m in client.search_logged_models([exp.experiment_id])
                if m.tags.get("rslad_tune.kind") == "teacher"}
    assert set(teachers) == {"t1", "t2"}  # each logged once, with its weights, card and digest
    for m in teachers.values():
        assert {a.path for a in client.list_logged_model_artifacts(m.model_id)} >= {"model.safetensors", "card.json"}
        assert len(m.tags["rslad_tune.weights_digest"]) == 64 and m.tags["teacher_source"] == "train"
        assert int(m.params["params"]) > 0
    for run in [parent, *children]:
        assert run.data.tags["mlflow.user"] == getpass.getuser()
        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert set(inputs) == {"training", "validation", "testing"}
        assert inputs["training"].name == "synthetic-train" and json.loads(inputs["training"].profile)["features_shape"][0] == 500
        assert inputs["testing"].digest and inputs["validation"].source_type == "code"
    for c in children:  # each trial linked to the teacher it learnt from
        model_id = teachers[c.data.params["teacher"]].model_id
        assert c.data.tags["teacher_model_id"] == model_id
        assert len(c.data.tags["ray.node_id"]) > 8  # the node that ran it (the parent's system metrics are the driver's)
        assert [m.model_id for m in c.inputs.model_inputs] == [model_id]
    assert {m.model_id for m in parent.inputs.model_inputs} == {m.model_id for m in teachers.values()}
    assert any(k.startswith("system/cpu_utilization") for k in parent.data.metrics)  # MLflow's system metrics

    # the answer: best validation metric, parameters and teacher; the export's test numbers and model version
    best = json.loads((exp_dir / "best" / "metrics.json").read_text())
    p = parent.data
    assert p.tags["best_trial_id"] == best["trial_id"] == p.tags["exported_trial_id"] and p.tags["best_teacher"] == best["teacher"]
    assert p.metrics["best_val_pgd_acc"] == pytest.approx(max(c.data.metrics["best_val_pgd_acc"] for c in children))
    assert p.metrics["best_val_pgd_acc"] == pytest.approx(best["val_pgd_acc"])
    assert p.params["best.teacher"] == best["teacher"] and float(p.params["best.alpha"]) == pytest.approx(0.75)
    assert p.metrics["test_pgd_acc"] == best["test_pgd_acc"]
    assert p.tags["registered_model_version"] == str(client.get_model_version_by_alias("tiny-student", "champion").version)

    # Optuna: a trial ASHA stopped is PRUNED with its last value, one that ran every epoch COMPLETE
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{exp_dir / 'optuna.db'}")
    by_value = {}
    for c in children:
        hist = sorted(client.get_metric_history(c.info.run_id, "val_pgd_acc"), key=lambda m: m.step)
        state = optuna.trial.TrialState.PRUNED if c.data.tags["early_stopped"] == "true" else optuna.trial.TrialState.COMPLETE
        by_value.setdefault(state, []).append([m.value for m in hist])
    assert sorted(len(v) for v in by_value.values()) == sorted(
        len([t for t in study.trials if t.state == s]) for s in by_value)
    for t in study.trials:
        assert [t.intermediate_values[k] for k in sorted(t.intermediate_values)] in by_value[t.state]

    # the plots of the sweep, on disk and on the parent run
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for png in ("pgd_per_epoch.png", "pareto.png", "parallel_coordinates.png",
                *(["param_importances.png"] if complete >= 2 else [])):
        assert (exp_dir / png).read_bytes()[:4] == b"\x89PNG" and png in arts, png
    assert "plots of the sweep" in out

    # the registered student in a process without rslad_tune: eval, train, one optimizer step, same logits
    x = torch.rand(16, 1, 28, 28)
    np.save(tmp_path / "x.npy", x.numpy())
    proc = subprocess.run([sys.executable, "-c", FINE_TUNE, uri, "models:/tiny-student@champion", str(tmp_path / "x.npy"),
                           str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "fine-tuned" in proc.stdout, proc.stderr[-3000:]
    with torch.no_grad():
        expected = rslad_tune.load_student(exp_dir / "best")(x).numpy()
    assert np.abs(np.load(tmp_path / "y.npy") - expected).max() < 1e-5


def test_the_mlflow_ui_tells_the_answer_and_the_sweep_prints_its_link(sweep):
    """What a person meets in the UI: the experiment's one line, the parent run's description (the report's answer,
    the recommended teacher, the exported student's test numbers, the command), the model version's description;
    and the sweep's last lines: the command that serves the store and the URL of its runs (Model training view)."""
    d, out = sweep
    exp_dir = d / "runs" / "tiny"
    client = MlflowClient(f"sqlite:///{d / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    headline = exp.tags["mlflow.note.content"]
    assert headline.startswith("rslad-tune sweep: RSLAD students") and "teacher ∈ {t1, t2}" in headline
    assert "\n" not in headline
    parent = json.loads((exp_dir / "sweep.json").read_text())["parent_run_id"]
    note = client.get_run(parent).data.tags["mlflow.note.content"]
    verdict = json.loads((exp_dir / "selection.json").read_text())["verdict"]
    best = json.loads((exp_dir / "best" / "metrics.json").read_text())
    assert note.startswith("**Should I distil?**") and note.endswith(f"**The space:** {headline}")
    assert f"**Should I distil?** {verdict['should_distill']['text']}" in note and "**Recommended teacher:**" in note
    numbers = (f"test clean {100 * best['test_clean_acc']:.2f} %, PGD-3 (cross-entropy, L∞ ε 0.1, step 0.025, uniform "
               f"start) {100 * best['test_pgd_acc']:.2f} % on the first 200 test images")
    assert numbers in note and f"teacher `{best['teacher']}`" in note
    assert "**Reproduce:** `rslad-tune --space " in note and "tiny-student@champion" in note
    mv = client.get_model_version_by_alias("tiny-student", "champion")
    trial = json.loads((exp_dir / "best" / "config.json").read_text())["trial"]
    assert numbers in mv.description and f"α {trial['alpha']:.2f}, training ε {trial['epsilon']:.3f}" in mv.description
    assert mv.description.startswith("The best student of the sweep `tiny`: RSLAD from teacher")
    lines = out.strip().splitlines()
    i = next(i for i, ln in enumerate(lines) if "MLflow UI: rslad-tune ui runs/tiny" in ln)
    assert lines[i].endswith(f"(or: mlflow ui --backend-store-uri sqlite:///{d / 'runs' / 'mlflow.db'})")
    assert lines[i + 1].endswith(f"then open: http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
                              "?workflowType=machine_learning")


def test_compare_evaluates_every_trial_once_and_aggregates(sweep):
    from rslad_tune.sweep.compare import compare_experiment

    d, _ = sweep
    exp = d / "runs" / "tiny"
    logs = []
    md, path = compare_experiment(exp, n_aa=8, aa_seed=0, n_examples=64, device="cpu", last=True, log=logs.append)
    out = json.loads((exp / "comparison.json").read_text())
    rows = out["rows"]
    assert len(rows) == 2 and all(r["n"] == 64 and r["n_aa"] == 8 for r in rows)  # both trials have seed 0
    for r in rows:
        assert r["PGD_SAT"] <= r["FGSM"] + 0.005 <= r["Clean"] + 0.01  # AA is on 8 of the 64 images: next line
        assert 0 <= r["AA"] <= r["PGD_SAT_aa"] + 1 / 8  # AutoAttack vs PGD-20 on the same 8 images
        assert set(r["last"]) == {"Clean", "FGSM", "PGD_SAT", "PGD_TRADES", "CW_inf"}  # --last: the last checkpoint too
        if r["best_epoch"] == r["last_epoch"]:  # one checkpoint: scored once, its numbers in both rows
            assert r["last"] == {c: r[c] for c in r["last"]}
    same = sum(r["best_epoch"] == r["last_epoch"] for r in rows)
    assert sum("last checkpoint = best" in ln for ln in logs) == same
    # the two trials differ only in their teacher (alpha, epsilon at the centre): one group per teacher
    assert out["groups_by"] == ["teacher"] and len(out["table"]) == 2
    best = [ln for ln in md.splitlines() if ln.startswith("| rslad") and "| best |" in ln]
    assert len(best) == 2 and all("± 0.00" in ln and "PGD-20 there" in ln for ln in best)
    assert sum("| last |" in ln for ln in md.splitlines()) == 2
    logs.clear()
    compare_experiment(exp, n_aa=8, aa_seed=0, n_examples=64, device="cpu", last=True, log=logs.append)
    assert sum("done before" in ln for ln in logs) == 2  # resumable: nothing evaluated twice
    # a row scored while its trial was still training (an earlier last epoch) is stale: scored again
    suite = exp / f"trial_{rows[0]['trial_id']}" / "suite.json"
    stale = json.loads(suite.read_text())
    suite.write_text(json.dumps(stale | {"last_epoch": stale["last_epoch"] - 1}))
    logs.clear()
    compare_experiment(exp, n_aa=8, aa_seed=0, n_examples=64, device="cpu", last=True, log=logs.append)
    assert sum("done before" in ln for ln in logs) == 1
    assert json.loads(suite.read_text())["last_epoch"] == stale["last_epoch"]


def test_export_verb_redoes_the_export(sweep, capsys):
    from rslad_tune.cli import main

    d, _ = sweep
    best = d / "runs" / "tiny" / "best"
    before = json.loads((best / "metrics.json").read_text())
    client = MlflowClient(f"sqlite:///{d / 'runs' / 'mlflow.db'}")
    version = int(client.get_model_version_by_alias("tiny-student", "champion").version)
    (best / "model.safetensors").unlink()  # damage the old export: the verb must rebuild it whole
    assert main(["export", str(d / "runs" / "tiny")]) == 2  # an export stands: replaced only when asked
    assert main(["export", str(d / "runs" / "tiny"), "--force"]) == 0
    after = json.loads((best / "metrics.json").read_text())
    assert after == before and (best / "model.safetensors").is_file()
    assert int(client.get_model_version_by_alias("tiny-student", "champion").version) > version  # the alias moved
    assert main(["export", str(d / "runs")]) == 2  # not a sweep folder
    assert "sweep.json" in capsys.readouterr().err


def test_selection_report_shows_every_teacher_and_is_logged(sweep, capsys):
    from rslad_tune.cli import main

    d, out = sweep
    exp = d / "runs" / "tiny"
    md = (exp / "selection.md").read_text()
    rows = json.loads((exp / "selection.json").read_text())["rows"]
    assert {r["teacher"] for r in rows} == {"t1", "t2"} and all(f"| {t} |" in md for t in ("t1", "t2"))
    assert sum(r["trials"] for r in rows) == 2
    for r in rows:  # only students that trained every epoch are evaluated; a teacher without one is undecided
        assert r["decided"] == (r["full_length"] > 0) and len(r["students"]) == r["full_length"] <= r["trials"]
        for s in r["students"]:
            assert s["n"] == 50 and s["n_aa"] == 6 and s["aa"] <= s["pgd20"] + 1 / 6 <= s["clean"] + 1 / 6 + 0.02
        assert (f"| undecided | {r['teacher']} |" in md) != r["decided"]
    assert (exp / "selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Is a larger teacher better?" in md or "Verdict: undecided" in md
    client = MlflowClient(f"sqlite:///{d / 'runs' / 'mlflow.db'}")
    parent = json.loads((exp / "sweep.json").read_text())["parent_run_id"]
    arts = {a.path for a in client.list_artifacts(parent, "selection")}
    assert {"selection/selection.md", "selection/selection.png", "selection/selection.json"} <= arts
    # the per-teacher table as an MLflow table, not as per-teacher metrics: the parent's charts keep a few figures
    assert "selection/selection_table.json" in {a.path for a in client.list_artifacts(parent, "selection")}
    table = json.loads(Path(client.download_artifacts(parent, "selection/selection_table.json", str(d))).read_text())
    assert {"rank", "teacher", "class", "student_pgd20_mean"} <= set(table["columns"])
    by_teacher = {row[table["columns"].index("teacher")]: row for row in table["data"]}
    for r in rows:
        assert by_teacher[r["teacher"]][table["columns"].index("full_length")] == r["full_length"]
    metrics = client.get_run(parent).data.metrics
    assert {k for k in metrics if not k.startswith("system/")} <= {"best_val_pgd_acc", "best_val_clean_acc",
                                                                   "test_clean_acc", "test_pgd_acc"}, sorted(metrics)
    assert "teacher selection report" in out
    # the verb re-writes the report from the cached student numbers (nothing re-evaluated)
    capsys.readouterr()
    assert main(["report", str(exp), "--n-examples", "50", "--n-aa", "6", "--device", "cpu"]) == 2  # it stands
    assert "--force" in capsys.readouterr().err
    assert main(["report", str(exp), "--n-examples", "50", "--n-aa", "6", "--device", "cpu", "--force"]) == 0
    assert ": student " not in capsys.readouterr().out  # the evaluation log line of report.py
    assert json.loads((exp / "selection.json").read_text())["rows"] == rows
    # without flags the verb uses the sweep's own report: section (n_examples 50, n_aa 6 here), not its own defaults
    assert main(["report", str(exp), "--device", "cpu", "--force"]) == 0
    assert ": student " not in capsys.readouterr().out
    assert json.loads((exp / "selection.json").read_text())["rows"] == rows


class _Payload:
    """Unpickling this creates a marker file: proof that a command ran code from the folder."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_no_command_unpickles_a_received_sweep_folder(sweep, tmp_path):
    """export, compare, report and evaluate read JSON and safetensors only: pickles planted in every Ray
    state file of a copied sweep folder never run."""
    import pickle
    import shutil

    from rslad_tune.cli import main

    d, _ = sweep
    exp = tmp_path / "runs" / "tiny"
    shutil.copytree(d / "runs" / "tiny", exp)
    shutil.copytree(d / "runs" / "teachers", tmp_path / "runs" / "teachers")  # (sweep.json names them inside runs/)
    marker = tmp_path / "pwned"
    planted = list(exp.rglob("*.pkl"))
    for p in planted:
        p.write_bytes(pickle.dumps(_Payload(str(marker))))
    assert len(planted) >= 4  # tuner.pkl, the searcher's state, each trial's params.pkl
    assert main(["export", str(exp), "--force"]) == 0
    assert main(["compare", str(exp), "--n-examples", "16", "--n-aa", "0", "--device", "cpu", "--force"]) == 0
    assert main(["report", str(exp), "--n-examples", "16", "--n-aa", "0", "--device", "cpu", "--force"]) == 0
    assert main(["evaluate", str(exp / "best"), "--n-examples", "16", "--n-aa", "0", "--device", "cpu"]) == 0
    assert not marker.exists()
    pickle.loads((exp / "tuner.pkl").read_bytes())  # the payload is live: loading it does create the marker
    assert marker.exists()


def test_a_number_is_computed_once_across_export_report_and_compare(sweep, tmp_path, monkeypatch):
    """One scoring function, one cache: export, then report, then compare on one sweep run each attack on each
    checkpoint once (counted at the bottom of robustness.py, where every attack's images are counted)."""
    import shutil

    import rslad_tune.trial.robustness as rob
    from rslad_tune.sweep.compare import evaluate_trials
    from rslad_tune.sweep.export import export_best
    from rslad_tune.sweep.report import selection_report

    d, _ = sweep
    exp = tmp_path / "runs" / "tiny"
    shutil.copytree(d / "runs" / "tiny", exp)
    shutil.copytree(d / "runs" / "teachers", tmp_path / "runs" / "teachers")  # (sweep.json names them inside runs/)
    for f in [*exp.rglob("*.scores.json"), *exp.rglob("suite.json"), *exp.rglob("selection.json")]:
        f.unlink()
    shutil.rmtree(exp / "best")
    calls = []
    count, aa = rob._count_correct, rob.autoattack_accuracy
    monkeypatch.setattr(rob, "_count_correct", lambda model, x, *a, **k: calls.append(len(x)) or count(model, x, *a, **k))
    monkeypatch.setattr(rob, "autoattack_accuracy", lambda model, x, *a, **k: calls.append(("AA", len(x))) or aa(model, x, *a, **k))
    export_best(exp, log=lambda s: None)
    after_export = len(calls)
    selection_report(exp, n_aa=6, device="cpu", log=lambda s: None)
    evaluate_trials(exp, n_aa=6, device="cpu", log=lambda s: None)
    keys = {(f.parent, k) for f in exp.rglob("*.scores.json") if f.parent.name != "best" for k in json.loads(f.read_text())["scores"]}
    assert after_export == 2  # the exported trial: clean and its own PGD
    assert len(calls) == len(keys), (len(calls), sorted(keys))  # nothing computed twice
    assert (exp / "best" / "model.scores.json").is_file()  # the exported weights carry their numbers
