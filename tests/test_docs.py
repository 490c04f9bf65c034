"""The README stays a front page (<= 250 lines, links that resolve, the test command .ci/run runs) and every
Markdown page under docs/ is in the site's nav (`mkdocs build --strict` in .ci/run checks the links inside it), and
the MLflow screenshots are no older than what they show."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_fits_on_a_few_screens():
    assert len(README.splitlines()) <= 250


def test_ci_runs_exactly_the_readme_test_command_last():
    command = re.search(r"Run the tests:\s*```bash\n(.+?)\n```", README, re.DOTALL).group(1).strip()
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == command


def test_readme_links_resolve():
    missing = [t for t in re.findall(r"\]\(([^)#]+)[^)]*\)", README) if "://" not in t and not (ROOT / t).exists()]
    assert not missing, missing


def test_every_docs_page_is_in_the_nav():
    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for v in node.values():
                yield from pages(v)
    nav = set(pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]))
    docs = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert docs == nav, (sorted(docs - nav), sorted(nav - docs))


def test_the_first_command_exports_onnx_without_an_extra():
    """model.onnx needs onnx and onnxscript (torch.onnx's exporter): default dependencies, so `pip install -e .`
    of the README's first command brings them."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!\[ ;]", d, maxsplit=1)[0] for d in deps}
    assert {"onnx", "onnxscript"} <= names
    assert "pip install -e . &&" in README


# what the MLflow screenshots show: the quickstart's space and the code that writes the MLflow store
SCREENSHOT_SOURCES = ("search_spaces/quickstart.yaml", "rslad_tune/sweep/tracking.py", "rslad_tune/sweep/parent_run.py",
                      "rslad_tune/sweep/mlflow_models.py", "rslad_tune/sweep/mlflow_data.py",
                      "rslad_tune/sweep/mlflow_notes.py")
CAPTION = re.compile(r"!\[[^\]]*\]\((mlflow-[\w-]+\.png)\)\s*\n\s*\n?\*[^*\n]*commit `([0-9a-f]{7,40})`")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_every_mlflow_screenshot_names_a_commit_no_older_than_what_it_shows():
    """Each docs/mlflow-*.png is shown in docs/mlflow.md with a caption naming the commit it was taken on; that
    commit must contain the last change to the quickstart's space and to the tracking code (git history)."""
    if shutil.which("git") is None or _git("rev-parse", "--is-shallow-repository").stdout.strip() != "false":
        pytest.skip("needs git and the repository's whole history")
    captions = dict(CAPTION.findall((ROOT / "docs" / "mlflow.md").read_text()))
    pictures = {p.name for p in (ROOT / "docs").glob("mlflow-*.png")}
    assert pictures == set(captions), f"pictures without a caption naming a commit, or captions without a picture: " \
                                      f"{sorted(pictures ^ set(captions))}"
    last = _git("log", "-1", "--format=%H", "--", *SCREENSHOT_SOURCES).stdout.strip()
    stale = {}
    for picture, commit in captions.items():
        known = _git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0
        if not known or _git("merge-base", "--is-ancestor", last, commit).returncode != 0:
            stale[picture] = commit if known else f"{commit} (not in this repository)"
    assert not stale, f"screenshots older than {last[:10]}, the last change to {', '.join(SCREENSHOT_SOURCES)}: " \
                      f"{stale}; retake them (tests/test_mlflow_ui.py, docs/mlflow.md says how)"
