"""Reliability, round three (issue 27): MLflow faults inside `train`, lock notes, verified weight reads on resume,
checks before work, tampered sweep-folder JSON, resume's manifest, full disks, read-only places and signals."""
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import planted_sweep_folder
from mlflow.tracking import MlflowClient

from rslad_tune.trial.files import file_lock


def test_a_lock_left_by_an_error_holds_no_stale_pid_note(tmp_path):
    lock = tmp_path / ".exp.lock"
    with pytest.raises(RuntimeError), file_lock(lock, "pid 123: rslad-tune export runs/exp", wait=False):
        assert lock.read_text().startswith("pid 123")
        raise RuntimeError("boom")
    assert lock.read_text() == ""


def test_mlflow_faults_inside_train_are_retried_and_never_raised(tmp_path, monkeypatch, capsys):
    from rslad_tune.sweep.tracking import TrainRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = TrainRun(uri, "one", tmp_path, "train-x", {"lr": 0.1})
    run.tracker.store.delays = (0.01, 0.01)
    real, calls = MlflowClient.log_batch, []

    def flaky(self, *args, **kwargs):  # the server restarts: the first try of each call fails
        calls.append(1)
        if len(calls) % 2:
            raise ConnectionError("tracking server went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    run.epoch({"epoch": 1, "pgd_acc": 0.25, "clean_acc": 0.5})
    assert [m.value for m in MlflowClient(uri).get_metric_history(run.run_id, "val_pgd_acc")] == [0.25]
    monkeypatch.setattr(MlflowClient, "log_batch", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    run.epoch({"epoch": 2, "pgd_acc": 0.3})  # away for good: one warning line, the training goes on
    run.finish("FINISHED")
    out = capsys.readouterr().out
    assert out.count("warning: could not log an epoch") == 1, out
    assert MlflowClient(uri).get_run(run.run_id).info.status == "FINISHED"


TINY = {"dataset": "synthetic", "train_subset": 200, "test_subset": 40, "val_size": 40, "arch": "small_cnn", "width": 4,
        "batch_size": 50, "attack_steps": 1, "eval_steps": 1, "num_threads": 1, "device": "cpu", "method": "sat"}


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A trial's checkpoints after epochs 1 and 2 (what Ray keeps with num_to_keep=2)."""
    import shutil

    from rslad_tune.trial.config import TrialConfig
    from rslad_tune.trial.trainer import train_model

    root = tmp_path_factory.mktemp("ckpts")
    work = root / "work"
    copy = lambda m, d: shutil.copytree(d, root / f"checkpoint_{m['epoch']:06d}")
    train_model(TrialConfig(**TINY, epochs=2), checkpoint_dir=work, report=copy)
    return root / "checkpoint_000001", root / "checkpoint_000002"


def _flip_a_weight(path: Path) -> None:
    """One bit of a tensor's bytes: the file still parses, its digest no longer matches."""
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_torch_free_verifier_agrees_with_the_torch_reader_on_every_dtype(tmp_path):
    """verify_safetensors (resume's preflight, no torch) recomputes tensor_digest from the file's bytes: it accepts
    what save_tensors wrote for every dtype it maps, and refuses, in read_tensors' / check_finite's words, a flipped
    bit, NaN/inf (bf16 included) and a file that is not safetensors."""
    import torch

    from rslad_tune.trial.errors import SpecError
    from rslad_tune.trial.files import (SAFETENSORS_DTYPES, check_finite, read_tensors, save_tensors,
                                        verify_safetensors)

    dtypes = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
              torch.int8, torch.uint8, torch.bool]
    assert sorted(str(d) for d in dtypes) == sorted(t for _, t in SAFETENSORS_DTYPES.values())
    good = {f"t{i}": (torch.arange(12).reshape(3, 4) % 3).to(d) for i, d in enumerate(dtypes)} | {"scalar": torch.tensor(1.5)}
    save_tensors(good, tmp_path / "good.safetensors")
    verify_safetensors(tmp_path / "good.safetensors", "k")
    read_tensors(tmp_path / "good.safetensors", "k")

    _flip_a_weight(shutil.copy(tmp_path / "good.safetensors", tmp_path / "flipped.safetensors"))
    for reader in (verify_safetensors, read_tensors):
        with pytest.raises(SpecError, match="is damaged: its tensors do not match the sha256 digest"):
            reader(tmp_path / "flipped.safetensors", "k")
    for d in (torch.float32, torch.bfloat16):
        bad = good | {"t1": torch.tensor([1.0, float("inf")], dtype=d)}
        save_tensors(bad, tmp_path / "inf.safetensors")
        with pytest.raises(SpecError) as torch_error:
            check_finite(read_tensors(tmp_path / "inf.safetensors", "k")[0], "k", tmp_path / "inf.safetensors")
        with pytest.raises(SpecError) as free_error:
            verify_safetensors(tmp_path / "inf.safetensors", "k")
        assert str(free_error.value) == str(torch_error.value) and "tensor 't1'" in str(free_error.value)
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(SpecError, match="is not a readable safetensors file"):
        verify_safetensors(tmp_path / "junk.safetensors", "k")


def test_resume_refuses_a_damaged_checkpoint_in_one_line_naming_it(two_checkpoints, tmp_path):
    import shutil

    from rslad_tune.trial.config import TrialConfig
    from rslad_tune.trial.errors import SpecError
    from rslad_tune.trial.trainer import train_model

    last = shutil.copytree(two_checkpoints[1], tmp_path / "checkpoint_000002")
    _flip_a_weight(last / "model.safetensors")
    with pytest.raises(SpecError) as e:
        train_model(TrialConfig(**TINY, epochs=3), resume_dir=last)
    msg = str(e.value)
    assert "model.safetensors" in msg and "damaged" in msg and len(msg.splitlines()) == 1, msg


def test_resume_falls_back_to_the_previous_good_checkpoint(two_checkpoints, tmp_path):
    import shutil

    from rslad_tune.trial.config import TrialConfig
    from rslad_tune.trial.trainer import train_model

    last = shutil.copytree(two_checkpoints[1], tmp_path / "checkpoint_000002")
    _flip_a_weight(last / "best.safetensors")
    lines = []
    r = train_model(TrialConfig(**TINY, epochs=3), resume_dir=last, fallbacks=[two_checkpoints[0]], log=lines.append)
    assert [h["epoch"] for h in r["history"]] == [1, 2, 3]  # epoch 1 from the good checkpoint, then 2 and 3 again
    assert any("previous good checkpoint" in ln and "checkpoint_000001" in ln for ln in lines), lines


def test_resume_of_a_sweep_whose_only_checkpoint_is_damaged_is_one_line_before_anything_runs(two_checkpoints, tmp_path):
    import shutil
    from types import SimpleNamespace

    from rslad_tune.sweep.manifest import write_manifest
    from rslad_tune.sweep.tuning import check_resumable
    from rslad_tune.trial.errors import SpecError

    exp = tmp_path / "runs" / "exp"
    (exp / "trial_a").mkdir(parents=True)
    (exp / "sweep.json").write_text("{}")
    write_manifest(exp)  # written by a sweep on this machine
    last = shutil.copytree(two_checkpoints[1], exp / "trial_a" / "checkpoint_000002")
    _flip_a_weight(last / "model.safetensors")
    spec = SimpleNamespace(runs_dir=str(tmp_path / "runs"), experiment="exp", source="", path="s.yaml")
    with pytest.raises(SpecError, match=r"checkpoint_000002/model.safetensors.*is damaged.*trial a has no earlier good"):
        check_resumable(spec)
    shutil.copytree(two_checkpoints[0], exp / "trial_a" / "checkpoint_000001")  # a good one before it: the trial falls back
    with pytest.raises(SpecError, match="holds no sweep to resume"):
        check_resumable(spec)


SPACE = {"experiment": "bad", "data": {"dataset": "synthetic", "train_subset": 200, "test_subset": 50, "val_size": 50},
         "teachers": {"t": {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1}}},
         "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 2, "teacher": "t"},
         "search": {"alpha": {"uniform": [0.5, 1.0]}}, "tune": {"num_samples": 2}}


def _previous_sweep(tmp_path: Path) -> Path:
    """runs/bad of an earlier sweep, with its export: a new sweep would move it aside."""
    import yaml

    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    best = tmp_path / "runs" / "bad" / "best"
    best.mkdir(parents=True)
    (best.parent / "sweep.json").write_text(json.dumps({"experiment": "bad"}))
    (best / "model.safetensors").write_bytes(b"the earlier export")
    return best


def test_address_auto_without_a_cluster_is_one_line_before_anything_moves(tmp_path, monkeypatch, capsys):
    from ray._private import services

    from rslad_tune.cli import main

    def no_cluster(addr, temp_dir):  # what Ray's lookup does when no `ray start --head` runs here
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(services, "get_ray_address_from_environment", no_cluster)
    monkeypatch.chdir(tmp_path)
    best = _previous_sweep(tmp_path)
    assert main(["--space", "space.yaml", "--address", "auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--address: 'auto'" in err and "ray start --head" in err, err
    assert (best / "model.safetensors").read_bytes() == b"the earlier export"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["bad"]  # no teacher, no store, no lock


def test_a_server_that_is_no_mlflow_store_is_refused_before_the_previous_sweep_moves(tmp_path, monkeypatch, capsys):
    import http.server
    import threading

    from rslad_tune.cli import main
    from rslad_tune.sweep import pending

    class NotMLflow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotMLflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(pending, "RETRY_DELAYS", (0.01,))
    monkeypatch.setattr(pending.Flaky.__init__, "__defaults__", (print, (0.01,)))
    monkeypatch.chdir(tmp_path)
    best = _previous_sweep(tmp_path)
    try:
        rc = main(["--space", "space.yaml", "--tracking-uri", f"http://127.0.0.1:{server.server_address[1]}"])
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "MLflow store does not answer" in err, err
    assert (best / "model.safetensors").read_bytes() == b"the earlier export"
    assert not (tmp_path / "runs" / "teachers").exists()


def test_an_ipv6_ray_address_is_parsed_and_reached(tmp_path):
    import socket

    from rslad_tune.sweep.preflight import check_ray_address

    try:
        server = socket.socket(socket.AF_INET6)
        server.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server.listen()
    try:
        check_ray_address(f"[::1]:{server.getsockname()[1]}")  # was "[::1]" as a host name: never reached
    finally:
        server.close()


def test_sighup_ends_a_command_like_ctrl_c(tmp_path):
    """A dropped ssh session: one line, exit 129, not a silent death."""
    import subprocess
    import sys

    child = """
import os, signal, time
import rslad_tune.cli as cli
def hup(args):
    os.kill(os.getpid(), signal.SIGHUP)
    time.sleep(5)
    return 0
cli.cmd_zoo = hup
print("rc", cli.main(["zoo", "list"]), flush=True)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert p.returncode == 0 and "rc 129" in p.stdout, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.strip() == "rslad-tune: interrupted by SIGHUP", p.stderr


def _sat_space(tmp_path: Path) -> None:
    import yaml

    space = {"experiment": "full", "data": {"dataset": "synthetic", "train_subset": 200, "test_subset": 40, "val_size": 40},
             "trial": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1, "eval_steps": 1,
                       "batch_size": 50},
             "search": {"lr": {"uniform": [0.01, 0.1]}}, "tune": {"num_samples": 1}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space))


def test_a_second_ctrl_c_keeps_the_resume_hint(tmp_path, monkeypatch, capsys):
    import signal

    from rslad_tune import cli
    from rslad_tune.sweep import tuning
    from rslad_tune.trial.errors import Interrupted

    def second_signal(args, spec):  # inside the sweep, after fit() began: raised without the folder to resume
        tuning._FIT["started"] = True
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(cli, "_tune_locked", second_signal)
    monkeypatch.setitem(tuning._FIT, "started", False)  # restored after the test: later tests see the true flag
    monkeypatch.chdir(tmp_path)
    _sat_space(tmp_path)
    assert cli.main(["--space", "s.yaml"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "rslad-tune: interrupted by SIGINT; the sweep is saved, continue it with: rslad-tune resume runs/full", err


def _ours(err: str) -> str:
    """Our lines on stderr (MLflow's logger says when it creates a store's tables)."""
    return "\n".join(ln for ln in err.splitlines() if ln.startswith("rslad-tune"))


def _no_space(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device", "runs/x")


def test_a_full_disk_during_train_is_one_line_exit_1_run_failed_no_scratch_left(tmp_path, monkeypatch, capsys):
    from rslad_tune.cli import main
    from rslad_tune.trial import trainer

    monkeypatch.chdir(tmp_path)
    _sat_space(tmp_path)
    monkeypatch.setattr(trainer, "save_weights", _no_space)
    assert main(["train", "--space", "s.yaml", "--out", "out"]) == 1
    err = _ours(capsys.readouterr().err)
    assert len(err.splitlines()) == 1 and err.startswith("rslad-tune: error: No space left on device"), err
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert run.info.status == "FAILED"
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_a_full_disk_in_a_sweep_ends_every_run_and_removes_the_scratch(tmp_path, monkeypatch, capsys):
    """The driver's side (Ray stood in for): the trial's run ends KILLED, the sweep's FAILED with the reason."""
    from rslad_tune.cli import main
    from rslad_tune.sweep import tuning
    from rslad_tune.sweep.tracking import PARENT_TAG

    def full_disk(spec, exp, teacher_dirs, callback, address, resume):
        exp.work_dir.mkdir(exist_ok=True)
        (exp.work_dir / "rslad-trial-x").mkdir()
        t = callback.tracker
        t.client.create_run(t.experiment_id, run_name="trial", tags={PARENT_TAG: t.parent_id, "ray.trial_id": "x"})
        _no_space()

    monkeypatch.setattr(tuning, "_tuner", full_disk)
    monkeypatch.chdir(tmp_path)
    _sat_space(tmp_path)
    assert main(["--space", "s.yaml"]) == 1
    err = _ours(capsys.readouterr().err)
    assert len(err.splitlines()) == 1 and "No space left on device" in err, err
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = {r.data.tags.get("rslad_tune.kind", "trial"): r for r in client.search_runs(
        [client.get_experiment_by_name("full").experiment_id])}
    assert runs["sweep"].info.status == "FAILED" and "No space left" in runs["sweep"].data.tags["error"]
    assert runs["trial"].info.status == "KILLED"
    assert not (tmp_path / "runs" / "full" / ".trial-work").exists()


@pytest.fixture
def mounted(tmp_path):
    """A tmpfs of our own (root only): a real full disk or a real read-only runs/; skipped where mount is refused."""
    import subprocess

    made = []

    def mount(path: Path, options: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, check=False).returncode:
            pytest.skip("cannot mount a tmpfs here (not root)")
        made.append(path)
        return path

    yield mount
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_a_read_only_runs_folder_is_one_line_exit_2_before_any_work(tmp_path, monkeypatch, capsys, mounted):
    from rslad_tune.cli import main

    runs = mounted(tmp_path / "runs", "ro,size=64k")
    monkeypatch.chdir(tmp_path)
    _sat_space(tmp_path)
    assert main(["--space", "s.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "runs_dir" in err and "read-only" in err, err
    assert list(runs.iterdir()) == []


def test_a_really_full_disk_during_train_is_one_line_and_leaves_no_scratch(tmp_path, monkeypatch, capsys, mounted):
    from rslad_tune.cli import main

    disk = mounted(tmp_path / "disk", "size=16k")
    monkeypatch.chdir(tmp_path)
    _sat_space(tmp_path)
    assert main(["train", "--space", "s.yaml", "--out", str(disk / "out")]) == 1
    err = _ours(capsys.readouterr().err)
    assert len(err.splitlines()) == 1 and "No space left on device" in err, err
    assert list(disk.iterdir()) == []


def test_resume_trusts_only_files_listed_in_this_machines_signed_manifest(tmp_path, monkeypatch, capsys):
    """Files all of one's own uid (root: every file) are not enough: what resume unpickles must be in the manifest
    its sweep signed with this machine's key (issue 27, finding 8)."""

    from rslad_tune.cli import main
    from rslad_tune.sweep.manifest import write_manifest

    monkeypatch.chdir(tmp_path)
    exp = planted_sweep_folder(tmp_path, SPACE)

    def refused(fragment: str) -> None:
        assert main(["resume", "runs/bad"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--resume" in err and fragment in err and "unpickles" in err, err

    refused("has no manifest signed by this machine")  # a received folder, every file of our uid
    write_manifest(exp)
    (exp / "trial_1").mkdir()
    (exp / "trial_1" / "params.pkl").write_bytes(b"\x80\x04N.")  # planted after the sweep signed
    refused("holds trial_1/params.pkl, which its sweep did not write")
    (exp / "trial_1" / "params.pkl").unlink()
    (exp / "tuner.pkl").write_bytes(b"\x80\x04K\x01.")  # changed since
    refused("holds tuner.pkl")
    write_manifest(exp)
    monkeypatch.setenv("RSLAD_TUNE_CACHE", str(tmp_path / "another-machine"))
    refused("has no manifest signed by this machine")  # signed, but with another machine's key


def test_a_signal_between_the_parent_run_and_tune_leaves_no_run_running(tmp_path, monkeypatch, capsys):
    import signal

    from rslad_tune.cli import main
    from rslad_tune.trial.errors import Interrupted
    from rslad_tune.sweep.layout import ExperimentDir

    def interrupted(self, info, space_text):  # Ctrl-C right after the parent run was created
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(ExperimentDir, "write_sweep", interrupted)
    monkeypatch.chdir(tmp_path)
    _sat_space(tmp_path)
    assert main(["--space", "s.yaml"]) == 130
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert run.info.status == "KILLED"


def test_ray_killing_the_trials_for_memory_is_one_line_exit_1_and_the_sweep_run_failed(tmp_path, monkeypatch, capsys):
    """Ray's memory monitor killed trial workers (another process took the memory): Tune's fit() raises a
    RuntimeError of 40 lines; the command says one line with the reason and ends the sweep's run FAILED."""
    from rslad_tune.cli import main
    from rslad_tune.sweep import tuning

    class Lost:
        def fit(self):
            raise RuntimeError("Caught unexpected exception: 2 worker(s) were killed due to the node running low on "
                               "memory. Memory on the node (IP: 192.0.2.2, ID: da7f184f) was 22.71GB used / 23.54GB "
                               "limit (0.964917)\nOOM kill reason: Memory usage 24055107584B exceeded threshold")

    monkeypatch.setattr(tuning, "_tuner", lambda *a, **k: Lost())
    monkeypatch.chdir(tmp_path)
    _sat_space(tmp_path)
    assert main(["--space", "s.yaml"]) == 1
    err = _ours(capsys.readouterr().err)
    assert err == ("rslad-tune: error: Ray Tune stopped the sweep: 2 worker(s) were killed due to the node running low "
                   "on memory. Memory on the node was 22.71GB used / 23.54GB limit (0.964917)"), err
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert run.info.status == "FAILED" and "running low on memory" in run.data.tags["error"]
    assert not (tmp_path / "runs" / "full" / ".trial-work").exists()
