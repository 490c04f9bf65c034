"""The MLflow UI in a real browser: `mlflow ui` on 127.0.0.1 over a sweep's tracking database, opened in
headless Chromium (Debian `chromium` + `chromium-driver`, driven by Selenium). The experiment page must
show the sweep's parent run and its child runs with their datasets in the Dataset column, a child run's page its
`val_pgd_acc` metric, the parent run's artifacts its plots (pareto.png); screenshots are saved
(RSLAD_TUNE_UI_SHOTS=dir keeps them, e.g. docs/).

By default a tiny synthetic sweep makes the database; RSLAD_TUNE_UI_DB=runs/mlflow.db (and
RSLAD_TUNE_UI_EXPERIMENT, default quickstart) points the test at the quickstart's database instead."""
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import free_port, tiny_grid_sweep
from mlflow.tracking import MlflowClient

SPACE = tiny_grid_sweep("ui")


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    if os.environ.get("RSLAD_TUNE_UI_DB"):
        return Path(os.environ["RSLAD_TUNE_UI_DB"]).resolve(), os.environ.get("RSLAD_TUNE_UI_EXPERIMENT", "quickstart")
    d = tmp_path_factory.mktemp("ui")
    (d / "space.yaml").write_text(yaml.safe_dump(dict(SPACE, runs_dir=str(d / "runs"))))
    subprocess.run([sys.executable, "-m", "rslad_tune.cli", "--space", "space.yaml", "--no-export"], cwd=d, check=True,
                   capture_output=True, timeout=600)
    return d / "runs" / "mlflow.db", "ui"


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian chromium and chromium-driver")
def test_mlflow_ui_shows_parent_children_datasets_metrics_and_plots(tracking, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    db, experiment = tracking
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if r.data.tags.get("rslad_tune.kind") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert children
    shots = Path(os.environ.get("RSLAD_TUNE_UI_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)

    port = free_port()
    t0 = time.time()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1800,1000"):
        opts.add_argument(a)
    driver = None
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        wait = WebDriverWait(driver, 90)

        body = lambda d: d.find_element(By.TAG_NAME, "body").text  # noqa: E731
        click = lambda el: driver.execute_script("arguments[0].click()", el)  # noqa: E731 (popovers cover buttons)
        # the training-runs table (MLflow 3 opens on its GenAI overview unless told otherwise)
        driver.get(f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
        wait.until(lambda d: parent.info.run_name in body(d))
        for button in driver.find_elements(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']"):
            click(button)  # expand the parent: its child runs (the trials) are nested under it
        wait.until(lambda d: sum(c.info.run_name in body(d) for c in children) >= min(len(children), 3))
        dataset = client.get_run(parent.info.run_id).inputs.dataset_inputs[0].dataset.name
        wait.until(lambda d: dataset in body(d))  # the Dataset column: the splits logged with mlflow.data
        for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
            click(close)  # the assistant side panel
        time.sleep(1)
        driver.save_screenshot(str(shots / "mlflow-experiment.png"))

        child = children[0]
        driver.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{child.info.run_id}?workflowType=machine_learning")
        wait.until(lambda d: "val_pgd_acc" in body(d))
        time.sleep(1)
        driver.save_screenshot(str(shots / "mlflow-trial.png"))

        # the parent run's plots: the sweep's Pareto front, opened in its artifact viewer
        driver.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}/artifacts/pareto.png"
                   "?workflowType=machine_learning")
        wait.until(lambda d: "pareto.png" in body(d) and d.find_elements(By.CSS_SELECTOR, "img"))
        time.sleep(2)
        driver.save_screenshot(str(shots / "mlflow-sweep-plots.png"))

        models = client.search_registered_models()  # an exported sweep (the quickstart's) registers its student
        if models:
            name = models[0].name
            driver.get(f"{base}/#/models/{name}")
            wait.until(lambda d: name in body(d) and "champion" in body(d))
            time.sleep(1)
            driver.save_screenshot(str(shots / "mlflow-model.png"))
    finally:
        if driver:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
    assert (shots / "mlflow-experiment.png").read_bytes()[:4] == b"\x89PNG"
    assert (shots / "mlflow-sweep-plots.png").read_bytes()[:4] == b"\x89PNG"
    assert not models or (shots / "mlflow-model.png").read_bytes()[:4] == b"\x89PNG"
    print(f"MLflow UI browser test: {time.time() - t0:.0f}s, screenshots in {shots}")
