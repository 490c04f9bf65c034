"""The MLflow UI as a user meets it. Fast: the addresses the tool prints, `rslad-tune ui`'s refusals and ports.

Slow (headless Chromium from Debian's `chromium` + `chromium-driver`, driven by Selenium): `rslad-tune ui` on a
finished sweep (a tiny one with a teacher search, the baseline, the export and the report), the URL taken from its
printed output; the runs table with the parent run and, expanded, its trials and the Model registry link; the parent
run's description with the report's answer; the registered model with its alias and its version's description; a
fresh browser that opens the home page and clicks the experiment, as docs/mlflow.md describes; the registered student
served by `mlflow models serve` answering like `load_student`; Ctrl-C stopping the UI. Screenshots are saved
(RSLAD_TUNE_UI_SHOTS=docs keeps them); RSLAD_TUNE_UI_SWEEP=runs/quickstart points the slow tests at a finished
quickstart instead of the tiny sweep (docs/mlflow.md's pictures).

    RSLAD_TUNE_UI_SWEEP=runs/quickstart RSLAD_TUNE_UI_SHOTS=docs python -m pytest -m slow tests/test_mlflow_ui.py
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import free_port

from rslad_tune.cli import main
from rslad_tune.sweep import mlflow_ui
from rslad_tune.trial.errors import SpecError

URL = re.compile(r"(http://\S+\?workflowType=machine_learning)")


# ---------------------------------------------------------------------------------------------------- fast


def test_the_printed_address_opens_the_runs_table_of_the_model_training_view():
    assert mlflow_ui.runs_url(mlflow_ui.ui_base("sqlite:////r/mlflow.db"), "7") == \
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert mlflow_ui.runs_url(mlflow_ui.ui_base("https://mlflow.example:8443/base/"), "3") == \
        "https://mlflow.example:8443/base/#/experiments/3/runs?workflowType=machine_learning"  # the server's own UI
    assert mlflow_ui.runs_url("http://127.0.0.1:5001", None) == "http://127.0.0.1:5001/#/experiments?workflowType=machine_learning"


def test_ui_without_a_store_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["ui", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no MLflow store there" in err and str(tmp_path) in err
    exp = tmp_path / "runs" / "gone"  # a sweep folder whose store was deleted
    exp.mkdir(parents=True)
    (exp / "sweep.json").write_text(json.dumps({"experiment": "gone", "tracking_uri": "sqlite:///mlflow.db"}))
    assert main(["ui", str(exp)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "which is not there" in err and "mlflow.db" in err
    with pytest.raises(SystemExit) as stop:
        main(["ui", str(exp), "--port", "70000"])
    assert stop.value.code == 2 and "port number" in capsys.readouterr().err


def test_a_taken_port_is_refused_with_port_and_avoided_without_it(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(SpecError, match=rf"--port: {port} is not allowed; that port is taken"):
            mlflow_ui.pick_port(port)
        monkeypatch.setattr(mlflow_ui, "PORT", port)  # mlflow ui's default port, taken: another free one
        other = mlflow_ui.pick_port(None)
        assert other != port and mlflow_ui._free(other)


# ---------------------------------------------------------------------------------------------------- slow

# teacher t1 and the no-teacher baseline, one student each (FIFO), the export and the report: about a minute
SPACE = {
    "experiment": "ui",
    "data": {"dataset": "synthetic", "train_subset": 400, "test_subset": 100, "val_size": 100},
    "teachers": {"t1": {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1,
                                  "batch_size": 32}, "card_aa_examples": 0},
                 "none": {"baseline": "sat"}},
    "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 2, "attack_steps": 1, "eval_steps": 2,
              "batch_size": 32, "lr": 0.05},
    "search": {"teacher": {"choice": ["t1", "none"]}, "alpha": {"uniform": [0.5, 1.0]}},
    "report": {"n_examples": 50, "n_aa": 0},
    "tune": {"num_samples": 2, "max_concurrent": 2, "scheduler": {"type": "fifo"}, "searcher": {"type": "optuna"},
             "resources": {"cpu": 1}},
}
BROWSER = shutil.which("chromium") and shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not BROWSER, reason="needs Debian chromium and chromium-driver")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    if os.environ.get("RSLAD_TUNE_UI_SWEEP"):
        return Path(os.environ["RSLAD_TUNE_UI_SWEEP"]).resolve()
    d = tmp_path_factory.mktemp("ui")
    (d / "space.yaml").write_text(yaml.safe_dump(dict(SPACE, runs_dir=str(d / "runs"))))
    proc = subprocess.run([sys.executable, "-m", "rslad_tune.cli", "--space", "space.yaml"], cwd=d, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return d / "runs" / "ui"


@pytest.fixture(scope="module")
def store(sweep_dir):
    """The sweep's client, experiment, parent run, its trials and the registered model's name."""
    from mlflow.tracking import MlflowClient

    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    uri = sweep["tracking_uri"]
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{(sweep_dir.parent / uri[len('sqlite:///'):]).resolve()}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(sweep["experiment"])
    parent = client.get_run(sweep["parent_run_id"])
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    model = sweep.get("registered_model") or f"{sweep['experiment']}-student"
    return {"uri": uri, "client": client, "exp": exp, "parent": parent, "children": children, "model": model}


class _Served:
    """`rslad-tune ui FOLDER` running, its output read as it comes; `url` is the address it printed."""

    def __init__(self, folder: Path):
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "rslad_tune.cli", "ui", str(folder)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=lambda: [self.lines.append(ln) for ln in self.proc.stdout], daemon=True).start()
        deadline = time.time() + 240
        while not any(URL.search(ln) for ln in self.lines):
            assert self.proc.poll() is None and time.time() < deadline, "".join(self.lines)[-3000:]
            time.sleep(0.5)
        self.url = next(URL.search(ln).group(1) for ln in self.lines if URL.search(ln))
        self.base = self.url.split("/#/")[0]


@pytest.fixture(scope="module")
def ui(sweep_dir):
    served = _Served(sweep_dir)
    yield served
    if served.proc.poll() is None:  # (test_ui_stops_cleanly_on_ctrl_c did not run)
        served.proc.send_signal(signal.SIGINT)
        served.proc.wait(timeout=60)


@pytest.fixture
def shots(tmp_path) -> Path:
    d = Path(os.environ.get("RSLAD_TUNE_UI_SHOTS", tmp_path))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def browser():
    """A fresh headless Chromium (a new profile: MLflow's per-browser view setting at its default)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1800,1000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    yield driver
    driver.quit()


def _body(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _click(driver, element) -> None:
    driver.execute_script("arguments[0].click()", element)  # popovers may cover the element


def _close_panels(driver) -> None:
    from selenium.webdriver.common.by import By

    for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        _click(driver, close)  # the assistant side panel, tours
    time.sleep(1)


def _link(driver, text: str):
    """The link (or button) a user would click, by its visible text."""
    from selenium.webdriver.common.by import By

    found = [e for e in driver.find_elements(By.XPATH, f"//a[normalize-space()={json.dumps(text)}] | "
                                             f"//button[normalize-space()={json.dumps(text)}] | "  # (the view switch:)
                                             f"//*[@role='button'][normalize-space()={json.dumps(text)}]") if e.is_displayed()]
    return found[-1] if found else None


def _answer(store) -> str:
    """The first sentence of the parent run's description as the UI renders it (Markdown bold gone)."""
    note = store["parent"].data.tags["mlflow.note.content"]
    para = next(p for p in note.split("\n\n") if p.startswith("**Should I distil?**"))
    return para.replace("**", "").split(":")[0]


@pytest.mark.slow
@needs_browser
def test_the_printed_link_opens_the_runs_the_answer_and_the_registered_student(ui, store, browser, shots):
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 90)
    exp, parent, children = store["exp"], store["parent"], store["children"]
    assert ui.url == f"{ui.base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
    browser.get(ui.url)  # a fresh browser, the address the tool printed
    wait.until(lambda d: parent.info.run_name in _body(d))
    assert _link(browser, "Model registry"), _body(browser)[:2000]  # the side bar's link to the registered student
    from selenium.webdriver.common.by import By

    for button in browser.find_elements(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']"):
        _click(browser, button)  # expand the parent: its trials are nested under it
    wait.until(lambda d: sum(c.info.run_name in _body(d) for c in children) >= min(len(children), 3))
    dataset = parent.inputs.dataset_inputs[0].dataset.name
    wait.until(lambda d: dataset in _body(d))  # the Dataset column: the splits logged with mlflow.data
    _close_panels(browser)
    browser.save_screenshot(str(shots / "mlflow-experiment.png"))

    # the parent run, clicked: its page opens in the browser's stored view (GenAI: the table's links do not carry the
    # URL's view), the description's first lines hold the answer, "Show more" the rest
    _click(browser, _link(browser, parent.info.run_name))
    wait.until(lambda d: _answer(store) in _body(d) and _link(d, "Show more"))
    _click(browser, _link(browser, "Show more"))
    wait.until(lambda d: "Recommended teacher:" in _body(d))
    assert "Exported student" in _body(browser) and "Reproduce:" in _body(browser)
    _close_panels(browser)
    browser.save_screenshot(str(shots / "mlflow-parent-run.png"))

    base = f"{ui.base}/#/experiments/{exp.experiment_id}/runs"
    browser.get(f"{base}/{children[0].info.run_id}?workflowType=machine_learning")  # a trial: its metrics
    wait.until(lambda d: "val_pgd_acc" in _body(d))
    _close_panels(browser)
    browser.save_screenshot(str(shots / "mlflow-trial.png"))
    browser.get(f"{base}/{parent.info.run_id}/artifacts/pareto.png?workflowType=machine_learning")  # the sweep's plots
    wait.until(lambda d: "pareto.png" in _body(d) and d.find_elements(By.CSS_SELECTOR, "img"))
    time.sleep(2)
    browser.save_screenshot(str(shots / "mlflow-sweep-plots.png"))

    name = store["model"]  # the registered student, reached as a user would: Model registry, then its name
    mv = store["client"].get_model_version_by_alias(name, "champion")
    _click(browser, _link(browser, "Model registry"))
    wait.until(lambda d: _link(d, name))
    _click(browser, _link(browser, name))
    wait.until(lambda d: "champion" in _body(d) and f"Version {mv.version}" in _body(d))
    _close_panels(browser)
    browser.save_screenshot(str(shots / "mlflow-model.png"))
    _click(browser, _link(browser, f"Version {mv.version}"))
    wait.until(lambda d: mv.description.replace("`", "").split(":")[0] in _body(d))  # Markdown: code spans rendered
    assert "champion" in _body(browser) and "test clean" in _body(browser)
    _close_panels(browser)
    browser.save_screenshot(str(shots / "mlflow-model-version.png"))


@pytest.mark.slow
@needs_browser
def test_a_fresh_browser_on_the_home_page_reaches_the_runs_as_the_docs_say(ui, store, browser, shots):
    """docs/mlflow.md: the home page; clicking the experiment opens MLflow's GenAI view (no runs there); the
    "Model training" switch shows the runs table with the sweep's parent run."""
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 90)
    exp, parent = store["exp"], store["parent"]
    browser.get(ui.base + "/")
    wait.until(lambda d: _link(d, exp.name))
    _click(browser, _link(browser, exp.name))
    wait.until(lambda d: "/overview" in d.current_url and "workflowType=genai" in d.current_url and "Traces" in _body(d))
    body = _body(browser)  # the GenAI overview: traces (none), no runs, no Model registry link; the switch on top
    assert "No data available" in body and "Model registry" not in body and parent.info.run_name not in body
    assert exp.tags["mlflow.note.content"][:60] in body  # the experiment's description
    wait.until(lambda d: _link(d, "Model training"))
    _close_panels(browser)
    browser.save_screenshot(str(shots / "mlflow-genai-view.png"))
    _click(browser, _link(browser, "Model training"))
    wait.until(lambda d: parent.info.run_name in _body(d) and _link(d, "Model registry"))
    assert "/runs?workflowType=machine_learning" in browser.current_url
    _click(browser, _link(browser, parent.info.run_name))  # the browser keeps the choice: the run's page stays in it
    wait.until(lambda d: _answer(store) in _body(d) and _link(d, "Model registry"))


@pytest.mark.slow
def test_the_registered_student_serves_invocations_like_load_student(sweep_dir, store, tmp_path):
    import numpy as np
    import torch

    import rslad_tune
    from rslad_tune.trial import saved
    from rslad_tune.trial.data import load_data

    cfg_file = sweep_dir / "best" / "config.json"
    x = load_data(saved.trial_config(json.loads(cfg_file.read_text())["trial"], cfg_file), "cpu").test_x[:8].cpu()
    with torch.no_grad():
        expected = rslad_tune.load_student(sweep_dir / "best")(x).numpy()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{store['model']}@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "MLFLOW_TRACKING_URI": store["uri"]}, stdout=(tmp_path / "serve.log").open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.time() + 240
        while True:
            try:
                urllib.request.urlopen(base + "/ping", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(1)
        request = urllib.request.Request(base + "/invocations", json.dumps({"inputs": x.numpy().tolist()}).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            got = np.asarray(json.loads(r.read())["predictions"], dtype=np.float32)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert got.shape == (8, 10) and np.abs(got - expected).max() < 1e-4


@pytest.mark.slow
def test_ui_stops_cleanly_on_ctrl_c(ui):
    ui.proc.send_signal(signal.SIGINT)
    assert ui.proc.wait(timeout=60) == 0, "".join(ui.lines)[-3000:]
    time.sleep(1)
    assert any("MLflow UI stopped" in ln for ln in ui.lines)
    with pytest.raises(OSError):  # the server is gone with it
        urllib.request.urlopen(ui.base + "/health", timeout=2)
