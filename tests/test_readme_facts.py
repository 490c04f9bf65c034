"""What the README and docs/zoo.md state about today's files: the number of shipped zoo teachers, the quickstart's
teachers and trials, and a line for every command. Each fails when the prose and the files disagree."""
import re
from pathlib import Path

import yaml

from rslad_tune.cli_args import build_parser
from rslad_tune.teachers import zoo

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                      "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}


def _number(word: str) -> int:
    return int(word) if word.isdigit() else NUMBERS[word.lower()]


def shipped_teachers() -> list[str]:
    return [n for n in zoo.zoo_names() if all((zoo.ZOO_ROOT / n / f).is_file() for f in zoo.FILES)]


def test_the_zoo_count_in_the_readme_and_docs_is_the_number_of_shipped_teachers():
    n = len(shipped_teachers())
    stated = re.search(r"the (\w+) shipped Fashion-MNIST\s+teachers", README)
    assert stated, "README: 'the N shipped Fashion-MNIST teachers' not found"
    assert _number(stated.group(1)) == n, f"README says {stated.group(1)}, {n} ship"
    page = (ROOT / "docs" / "zoo.md").read_text()
    stated = re.search(r"^(\w+) teachers ship inside the package", page, re.MULTILINE)
    assert stated and _number(stated.group(1)) == n, f"docs/zoo.md says {stated and stated.group(1)}, {n} ship"


def test_the_quickstart_sentence_names_its_teachers_and_trials():
    space = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
    sentence = re.search(r"Run the quickstart sweep \((.+?) trials", README, re.DOTALL).group(1)
    zoo_teachers = sorted(k for k, v in space["teachers"].items() if "zoo" in v)
    named = re.search(r"(\w+) zoo teachers, ([\w ,]+?) and ([\w]+),", sentence)
    assert named, sentence
    assert _number(named.group(1)) == len(zoo_teachers)
    assert sorted([*named.group(2).split(", "), named.group(3)]) == zoo_teachers
    has_baseline = any("baseline" in v for v in space["teachers"].values())
    assert ("the student trained alone" in sentence) == has_baseline
    assert int(re.search(r"(\d+)$", sentence.strip()).group(1)) == space["tune"]["num_samples"]
    assert f"{space['tune']['max_concurrent']} at" in README[README.index(sentence):][:len(sentence) + 40]


def test_every_command_has_a_line_in_the_readme():
    block = re.search(r"## Commands\s*```bash\n(.+?)```", README, re.DOTALL).group(1)
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = []
    for name, parser in sub.choices.items():
        actions = next((a.choices for a in parser._actions if a.dest == "action"), None)
        for action in actions or [None]:
            # a command with actions (zoo list|build|proxies) needs each action named after it on some line
            pattern = rf"\b{name}\b" if action is None else rf"\b{name}\b[^\n]*\b{action}\b|\b{action}\b.*\b{name}\b"
            if name != "tune" and not re.search(pattern, block):
                missing.append(f"{name} {action or ''}".strip())
    assert not missing, f"no line in the README's Commands for: {missing}"
