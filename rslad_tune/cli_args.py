"""The command line's words: the verbs, their arguments, `--version`, and how the first word is routed.

Imports nothing heavy (argparse and the stdlib only): `rslad-tune --help`, `--version` and `completion` answer
without torch, Ray, MLflow, Optuna or matplotlib; each verb imports what it needs when it runs (cli.py).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

VERBS = ("tune", "train", "export", "evaluate", "compare", "report", "resume", "zoo", "teachers", "ui", "completion")
DEVICES = ("auto", "cpu", "cuda")
SHELLS = ("bash", "zsh", "tcsh")  # what shtab writes completion scripts for (and tests here)
# shtab's FILE and DIRECTORY hints, written out so that building the parser needs no shtab
_FILE = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}
_DIR = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/", "tcsh": "d"}


def version() -> str:
    """The installed distribution's version, else (a source tree that is not installed) pyproject.toml's."""
    from importlib import metadata

    try:
        return metadata.version("rslad-tune")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE) if pyproject.is_file() else None
        return found.group(1) if found else "unknown"


class _Version(argparse.Action):
    """`--version`: the version is looked up only when asked for (argparse's own action wants it up front)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"rslad-tune {version()}")
        parser.exit(0)


def _int_in(lo: int, hi: int | None, what: str):
    """An argparse type: an integer in [lo, hi], else the one-line usage error saying `what` it must be."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = lo - 1
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; must be {what}")
        return v
    return parse


_positive_int = _int_in(1, None, "a positive integer")
_count = _int_in(0, None, "a non-negative integer")
_seed = _int_in(0, 2**32 - 1, "a seed in [0, 4294967295]")


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"rslad-tune: error: {message} (see {self.prog} --help)\n")


def route(argv: list[str]) -> list[str]:
    """`rslad-tune --space X` is `rslad-tune tune --space X` (tune is the default verb); a bare first word that
    is not a verb is a one-line usage error with a did-you-mean, exit 2."""
    if not argv or argv[0] in VERBS or argv[0] in ("-h", "--help", "--version"):
        return argv
    if argv[0].startswith("-"):
        return ["tune", *argv]
    import difflib

    close = difflib.get_close_matches(argv[0], VERBS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    print(f"rslad-tune: error: {argv[0]!r} is not a verb{hint} (verbs: {', '.join(VERBS)})", file=sys.stderr)
    raise SystemExit(2)


def _file(action: argparse.Action, hint: dict = _FILE) -> argparse.Action:
    action.complete = hint  # shtab's completion hint: paths, not words
    return action


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rslad-tune", description="Distil adversarial robustness (RSLAD) and tune it with Ray Tune + MLflow. "
                "`rslad-tune --space FILE` is `rslad-tune tune --space FILE`.")
    p.add_argument("--version", action=_Version, help="print `rslad-tune <version>` and exit")
    sub = p.add_subparsers(dest="verb")
    uri_help = ("MLflow tracking URI (http://host:port for a server). Order: this flag, the YAML's tracking_uri, "
                "$MLFLOW_TRACKING_URI, sqlite:///<runs_dir>/mlflow.db")

    def space_args(sp):
        _file(sp.add_argument("--space", required=True, help="YAML search space, e.g. search_spaces/quickstart.yaml"))
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a YAML value (repeatable): tune.num_samples=2, tune.scheduler.grace_period=2, "
                        "data.train_subset=2000, report.n_aa=0; a plain key is a trial key (alpha=0.9 is trial.alpha) "
                        "and fixes it when it is searched")
        _file(sp.add_argument("--data-dir", help="dataset folder (overrides data.data_dir)"), _DIR)
        _file(sp.add_argument("--runs-dir", help="output folder (default: the YAML's runs_dir, else runs/)"), _DIR)
        sp.add_argument("--tracking-uri", help=uri_help)

    t = sub.add_parser("tune", help="run a sweep (default)")
    space_args(t)
    t.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    t.add_argument("--no-export", action="store_true", help="skip exporting the best student")
    t.add_argument("--resume", action="store_true", help="continue the interrupted sweep in runs/<experiment> "
                   "(finished trials kept, unfinished ones from their last checkpoint; same YAML, no --set)")
    t.add_argument("--no-report", action="store_true", help="skip the teacher selection report (written when teacher is searched)")

    rs = sub.add_parser("resume", help="continue an interrupted sweep: rslad-tune resume runs/<experiment>")
    _file(rs.add_argument("experiment_dir", help="runs/<experiment> of the interrupted sweep"), _DIR)
    rs.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    rs.add_argument("--no-export", action="store_true", help="skip exporting the best student")
    rs.add_argument("--no-report", action="store_true", help="skip the teacher selection report")

    tr = sub.add_parser("train", help="run one trial without Ray: the YAML's fixed values, searched keys at their centre")
    space_args(tr)
    _file(tr.add_argument("--out", help="checkpoint folder (default runs/<experiment>-train)"), _DIR)
    tr.add_argument("--force", action="store_true", help="replace what --out holds (refused without it)")

    e = sub.add_parser("export", help="export the best student of a sweep folder")
    _file(e.add_argument("experiment_dir", help="runs/<experiment>"), _DIR)
    e.add_argument("--force", action="store_true", help="replace an existing export (best/), all its files at once")

    ev = sub.add_parser("evaluate", help="the paper's robustness table (Clean, FGSM, PGD SAT/TRADES, CW-inf, AutoAttack) of a model folder")
    _file(ev.add_argument("path", help="an exported student (runs/<experiment>/best) or a trial checkpoint folder "
                          "(trial.json + model.safetensors + best.safetensors)"), _DIR)
    ev.add_argument("--n-examples", type=_positive_int, metavar="N", help="first N test images (default: the whole test split)")
    ev.add_argument("--n-aa", default="500", metavar="N", help="AutoAttack on the first N of them (default 500; 'all' for every one). "
                    "AutoAttack is slow on CPU: the progress lines give the rate and ETA")
    ev.add_argument("--attacks", default="clean,fgsm,pgd_sat,pgd_trades,cw_inf,aa", help="comma-separated columns (default: all six)")
    _file(ev.add_argument("--out", help="JSON file for the numbers (default PATH/eval.json)"))
    ev.add_argument("--force", action="store_true", help="replace an earlier eval.json (or --out) (refused without it)")
    ev.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    ev.add_argument("--seed", type=_seed, default=0, help="attack seed (default 0)")
    ev.add_argument("--batch-size", type=_positive_int, default=500, help="images per attack batch (default 500)")

    c = sub.add_parser("compare", help="the evaluation suite on every finished trial of a sweep, mean ± std over seeds")
    _file(c.add_argument("experiment_dir", help="runs/<experiment>, e.g. of search_spaces/paper_fmnist.yaml"), _DIR)
    c.add_argument("--n-examples", type=_positive_int, metavar="N", help="first N test images (default: all)")
    c.add_argument("--n-aa", type=_count, default=500, metavar="N", help="AutoAttack on the first N images (default 500; 0: none)")
    c.add_argument("--aa-seed", type=_seed, default=0, help="run AutoAttack for the trials of this seed only (default 0)")
    c.add_argument("--last", action="store_true", help="also score each trial's last checkpoint (best versus last)")
    c.add_argument("--attacks", default="clean,fgsm,pgd_sat,pgd_trades,cw_inf,aa",
                   help="comma-separated columns (default: all six; e.g. clean,pgd_sat,aa for a ranking by PGD-20)")
    c.add_argument("--device", default="auto", choices=DEVICES, help="auto (default), cpu or cuda")
    c.add_argument("--force", action="store_true", help="replace an earlier comparison.{md,json} (refused without it)")

    r = sub.add_parser("report", help="teacher selection report: every teacher's students (mean ± std), the verdict against the noise")
    _file(r.add_argument("experiment_dir", help="runs/<experiment> of a sweep that used teachers, e.g. of search_spaces/teacher.yaml"), _DIR)
    r.add_argument("--n-examples", type=_positive_int, metavar="N", help="first N test images for clean / PGD-20 (default: the "
                   "sweep's report.n_examples, else all)")
    r.add_argument("--n-aa", type=_count, metavar="N", help="AutoAttack on the first N images (default: the sweep's "
                   "report.n_aa, else 200; 0: none)")
    r.add_argument("--device", default="auto", choices=DEVICES, help="auto (default), cpu or cuda")
    r.add_argument("--force", action="store_true", help="replace an earlier report (selection.{md,json,png}, "
                   "selection_curves.png; refused without it)")

    store_help = ("the MLflow store to log to and replay into: this flag, else $MLFLOW_TRACKING_URI, else mlflow.db in "
                  "the sweep's runs folder; used only when it is the one the sweep's sweep.json names")
    for sp in (e, ev, c, r):
        sp.add_argument("--tracking-uri", help=store_help)

    z = sub.add_parser("zoo", help="the teacher zoo shipped with rslad-tune: list it, or rebuild a teacher from its recipe")
    z.add_argument("action", choices=("list", "build", "proxies"), help="list: names and cards; build: retrain NAME from its "
                   "recipe.yaml; proxies: store every (or NAME's) teacher's proxies on teacher.yaml's data in its card.json")
    z.add_argument("name", nargs="?", help="a zoo teacher, e.g. fashion_mnist/sat_w32 (build)")
    z.add_argument("--threads", type=_positive_int, help="torch threads for the build (default: torch's default)")
    _file(z.add_argument("--work-dir", default="runs", help="scratch folder for the build (default runs/)"), _DIR)
    fmt = z.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="list: a Markdown table (docs/zoo.md's)")
    fmt.add_argument("--json", action="store_true", help="list: a JSON list of the cards (name, params, macs, clean_acc, "
                   "pgd20_acc, eval_n, aa_acc, aa_n, build_time_s, recipe)")

    tp = sub.add_parser("teachers", help="rank a YAML's teachers by a proxy (one pass of each teacher), before any student trains")
    tp.add_argument("action", choices=("rank",), help="rank: every teacher's proxies on the YAML's data, one sorted table")
    _file(tp.add_argument("--space", required=True, help="YAML search space, e.g. search_spaces/teacher.yaml"))
    tp.add_argument("--by", default="true_prob", help="the proxy to sort by: true_prob (default), clean_acc, nll, ece, entropy")
    tp.add_argument("--json", action="store_true", help="print the rows as JSON")
    tp.add_argument("--space-only", action="store_true", help="rank only the YAML's teachers (default: also the other "
                    "zoo teachers of its dataset, marked *)")

    u = sub.add_parser("ui", help="serve a sweep's MLflow store with `mlflow ui` on 127.0.0.1 and print the URL of its "
                       "runs (the Model training view); Ctrl-C stops it")
    _file(u.add_argument("path", nargs="?", default="runs", help="a sweep folder (runs/<experiment>: its recorded store "
                         "and experiment) or a runs folder (its mlflow.db, every experiment); default runs"), _DIR)
    u.add_argument("--port", type=_int_in(1, 65535, "a port number in [1, 65535]"),
                   help="the port to serve on (default 5000, or a free port when 5000 is taken)")

    co = sub.add_parser("completion", help="print a shell completion script (shtab), e.g. rslad-tune completion bash",
                        description="e.g. rslad-tune completion bash > ~/.local/share/bash-completion/completions/rslad-tune")
    co.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    return p
