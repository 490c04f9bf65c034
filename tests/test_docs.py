"""The README stays a front page (<= 250 lines, links that resolve, the test command .ci/run runs) and every
Markdown page under docs/ is in the site's nav (`mkdocs build --strict` in .ci/run checks the links inside it)."""
import re
from pathlib import Path

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
