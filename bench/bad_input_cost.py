"""What refusing bad input costs: wall time and peak memory of ONE fresh CLI process per bad input.

Each bad input (hostile search-space files, bad values, unusable places, corrupt data, a tampered sweep folder, a
damaged checkpoint on resume) is built in a temp folder as tests/test_bad_input.py, test_reliability.py and
test_received_folder.py build it; one child `python -c` runs `rslad_tune.cli.main([...])` there (what
`python -m rslad_tune.cli` runs) under `/usr/bin/time -f '%e %M'`: exit code, wall s, peak MB (%M; VmHWM in the JSON),
`torch` in sys.modules after main returned, the first `rslad-tune: error:` (else warning) line. Baselines:
`python -c "import torch"`, `python -c "import yaml"`.
One case at a time. The parent imports no torch, mlflow or ray; what needs torch is built by one child first.

    PYTHONPATH=. python -m bench.bad_input_cost        # table printed, bench/bad_input_cost.{md,json} written
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT, DEVICE = Path(__file__).resolve().parents[1], "2-core x86_64 CPU, no GPU"

GOOD = {  # tests/test_bad_input.py::GOOD: a small synthetic sweep that passes every check
        "experiment": "bad", "data": {"dataset": "synthetic", "train_subset": 200, "test_subset": 50, "val_size": 50},
        "teachers": {"t": {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1}}},
        "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 2, "teacher": "t"},
        "search": {"alpha": {"uniform": [0.5, 1.0]}}, "tune": {"num_samples": 2}}
TINY = {  # tests/test_received_folder.py::TINY; REL_TINY: tests/test_reliability.py::TINY
        "dataset": "synthetic", "train_subset": 200, "test_subset": 40, "val_size": 40, "arch": "small_cnn",
        "width": 4, "batch_size": 50, "lr": 0.05, "attack_steps": 1, "eval_steps": 1, "epsilon": 0.05,
        "eval_epsilon": 0.05, "num_threads": 1, "device": "cpu", "method": "sat", "epochs": 1}
REL_TINY, HUGE_INT = {k: v for k, v in TINY.items() if k not in ("lr", "epsilon", "eval_epsilon", "epochs")}, "1" + "0" * 5000
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def alias_bomb(levels: int) -> str:  # tests/test_bad_input.py::_alias_bomb: 9**(levels + 1) values expanded
    lines = ['  a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "lol:\n" + "\n".join(lines) + "\n"


# Built once by a child (it imports torch): a finished trial as Ray leaves it (test_received_folder.py::trained), an
# export-like best/ (test_bad_input.py::_tampered_export), a signed sweep whose one checkpoint is damaged (test_reliability)
BUILD = r'''
import json, shutil, sys
from pathlib import Path
import torch; torch.set_num_threads(1)
from rslad_tune.trial.config import TrialConfig; from rslad_tune.trial.files import save_weights
from rslad_tune.trial.models import build_model; from rslad_tune.trial.trainer import train_model
root, s = Path(sys.argv[1]), json.loads(sys.argv[2])
trial = root / "trial_t1"
r = train_model(TrialConfig(**s["tiny"]), checkpoint_dir=trial / "checkpoint_000000")
(trial / "result.json").write_text(json.dumps({**r["history"][-1], "trial_id": "t1"}) + "\n")
(trial / "params.json").write_text(json.dumps(TrialConfig(**s["tiny"]).to_dict()))
(best := root / "best").mkdir()
save_weights(build_model("small_cnn", 1, 10, 4), best / "model.safetensors")
t = TrialConfig(**s["good"]["data"], **s["good"]["trial"]).to_dict()
(best / "config.json").write_text(json.dumps({"arch": "small_cnn", "width": 4, "in_channels": 1, "num_classes": 10,
                                              "image_size": 28, "trial": t}))
train_model(TrialConfig(**s["rel_tiny"], epochs=2), checkpoint_dir=root / "work",
            report=lambda m, d: shutil.copytree(d, root / "ckpts" / f"checkpoint_{m['epoch']:06d}"))
(exp := (case := root / "resume") / "runs" / "bad" / "trial_a").mkdir(parents=True)
exp = exp.parent
for f in (case / "space.yaml", exp / "space.yaml"): f.write_text(s["space"])
(exp / "sweep.json").write_text(json.dumps({"experiment": "bad", "space": str(case / "space.yaml")}))
from rslad_tune.sweep.manifest import write_manifest; write_manifest(exp)
last = shutil.copytree(root / "ckpts" / "checkpoint_000002", exp / "trial_a" / "checkpoint_000002")
data = bytearray((last / "model.safetensors").read_bytes()); data[-5] ^= 0x01  # test_reliability.py::_flip_a_weight
(last / "model.safetensors").write_bytes(bytes(data))
'''

# The measured child: the CLI's main() as `python -m rslad_tune.cli` runs it, then what it cost.
WRAP = r'''
import json, sys, traceback
from rslad_tune.cli import main; tb = False
try:
    rc = main(json.loads(sys.argv[1]))
except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
except BaseException:
    traceback.print_exc(); rc, tb = 1, True
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:")); sys.stdout.flush()
print("@@BENCH " + json.dumps({"rc": rc, "vmhwm_kib": hwm, "torch": "torch" in sys.modules, "traceback": tb}), flush=True)
'''


def env() -> dict:  # the cases stay themselves: no store or cluster named by this shell
    return {**{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")},
            "RSLAD_TUNE_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


# ---- input builders: each writes into the case's folder d (built: the builder child's folder), returns the argv
def space(d: Path, **edits) -> list[str]:
    raw = json.loads(json.dumps(GOOD))
    for path, value in edits.items():
        keys, node = path.split("__"), raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    (d / "space.yaml").write_text(yaml.safe_dump(raw))
    return ["--space", "space.yaml"]


SPACE_FILES = {  # tests/test_bad_input.py::test_the_worst_inputs_are_refused_in_seconds_and_megabytes
    "bomb.yaml": lambda good: good + alias_bomb(10), "big.yaml": lambda good: "x" * 50_000_000,
    "deep.yaml": lambda good: good + f"junk: {'[' * 10_000}{']' * 10_000}\n",
    "int.yaml": lambda good: good.replace("  epochs: 2\n", f"  epochs: {HUGE_INT}\n")}


def hostile(name: str, verb: list[str]):  # "." is the --space-a-directory case
    return lambda d, b: [name != "." and (d / name).write_text(SPACE_FILES[name](yaml.safe_dump(GOOD))), *verb, name][1:]


def evaluate(config=None, metrics=None, *extra):  # test_bad_input.py::_tampered_export
    def make(d: Path, built: Path) -> list[str]:
        best = shutil.copytree(built / "best", d / "runs" / "old" / "best")
        if config:
            (best / "config.json").write_text(json.dumps({**json.loads((best / "config.json").read_text()), **config}))
        if metrics is not None:
            (best / "metrics.json").write_text(json.dumps(metrics))
        return ["evaluate", str(best), "--attacks", "clean", "--n-aa", "0", *extra]
    return make


VERBS = {"export": lambda e: ["export", str(e)],  # test_received_folder.py::VERBS
         "compare": lambda e: ["compare", str(e), "--attacks", "clean", "--n-aa", "0", "--n-examples", "10"],
         "report": lambda e: ["report", str(e), "--n-aa", "0"]}


def folder(verb: str, result=None, history=None, pending=False):
    """test_received_folder.py::_sweep (no store named) holding the trained trial, then one file changed."""
    def make(d: Path, built: Path) -> list[str]:
        exp = d / "runs" / "exp"
        shutil.copytree(built / "trial_t1", exp / "trial_t1")
        (exp / "sweep.json").write_text(json.dumps({"experiment": "exp", "parent_run_id": "0" * 32}))
        if result is not None:
            (exp / "trial_t1" / "result.json").write_text(json.dumps(result) + "\n")
        if history is not None:
            tj = exp / "trial_t1" / "checkpoint_000000" / "trial.json"
            tj.write_text(json.dumps({**json.loads(tj.read_text()), "history": history}))
        if pending:  # test_received_folder.py::_plant: records naming files outside the folder
            (d / "secret.txt").write_text("do not upload")
            rec = [{"op": "artifact", "run": "0" * 32, "trial": None, "path": p, "folder": "x"}
                   for p in (str(d / "secret.txt"), "../../secret.txt")]
            (exp / "mlflow-pending.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rec))
        return VERBS[verb](exp)
    return make


NotRun = type("NotRun", (Exception,), {})  # a case this machine cannot hold as asked: recorded, not run


def address_auto(d: Path, built: Path) -> list[str]:
    gcs = [c.parent.name for c in Path("/proc").glob("[0-9]*/cmdline") if b"gcs_server" in c.read_bytes()[:300]]
    if gcs:
        raise NotRun(f"not run: a Ray cluster runs on this machine (gcs_server pid {gcs[0]}, the training job's "
                     "ray.init); `auto` finds it, is accepted, and the sweep would join that cluster")
    return space(d) + ["--address", "auto"]


STRINGS = {"trial_id": "t1", "best_pgd_acc": "0.5", "epoch": 1, "best_epoch": 1}
Y = lambda *extra, **edits: (lambda d, b: space(d, **edits) + list(extra))
CASES = [  # (group, case, verb, builder(d, built) -> argv)
    *[("1 space file", f"{label}", " ".join(v).replace("--space", "--space F"), hostile(name, v))
      for v in (["tune", "--space"], ["train", "--space"])
      for label, name in (("alias bomb 9**11 values", "bomb.yaml"), ("50 MB non-YAML file", "big.yaml"),
                          ("YAML nested 10,000 deep", "deep.yaml"), ("5001-digit integer", "int.yaml"),
                          ("--space is a directory", "."))],
    ("2 values", "runs_dir: ~nosuchuser_rslad/x", "tune", Y(runs_dir="~nosuchuser_rslad/x")),
    ("2 values", "--set tune.num_samples=0", "tune", Y("--set", "tune.num_samples=0")),
    ("2 values", "tune.num_samples: 0 in the YAML", "tune", Y(tune__num_samples=0)),
    ("2 values", "unknown top-level key experimnt", "tune", Y(experimnt="x")),
    ("3 places", "--runs-dir through a file (space.yaml/runs)", "tune", Y("--runs-dir", "space.yaml/runs")),
    ("3 places", "runs/teachers is a file", "tune",
     lambda d, b: [(d / "runs").mkdir(), (d / "runs" / "teachers").write_text("x")] and space(d)),
    ("3 places", "lock path runs/.bad.lock is a folder", "tune",
     lambda d, b: (d / "runs" / ".bad.lock").mkdir(parents=True) or space(d)),
    ("3 places", "--tracking-uri http://127.0.0.1:9", "tune", Y("--tracking-uri", "http://127.0.0.1:9")),
    ("3 places", "--tracking-uri sqlite:///junk.db (not a DB)", "tune",
     lambda d, b: [(d / "junk.db").write_bytes(b"not a database" * 10)] and Y("--tracking-uri", "sqlite:///junk.db")(d, b)),
    ("3 places", "--address 127.0.0.1:9", "tune", Y("--address", "127.0.0.1:9")),
    ("3 places", "--address auto, no `ray start` cluster", "tune", address_auto),
    ("3 places", "evaluate --out /proc/x.json", "evaluate", evaluate(None, None, "--out", "/proc/x.json")),
    ("4 data", "corrupt .gz in --data-dir (fashion_mnist)", "tune",  # test_bad_input.py::_corrupt_gz
     lambda d, b: [(d / "fm").mkdir(), *[(d / "fm" / f"{f}.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated") for f in FMNIST_FILES]]
     and space(d, data__dataset="fashion_mnist") + ["--data-dir", "fm"]),
    ("5 sweep folder", "best/config.json unknown arch", "evaluate", evaluate({"arch": "resnet999"})),
    ("5 sweep folder", "best/config.json width 10**9", "evaluate", evaluate({"width": 10**9})),
    ("5 sweep folder", "best/metrics.json is a list", "evaluate", evaluate(None, [1, 2])),
    ("5 sweep folder", "result.json strings for numbers", "export", folder("export", STRINGS)),
    ("5 sweep folder", "result.json strings for numbers", "compare", folder("compare", STRINGS)),
    ("5 sweep folder", "trial.json empty history", "export", folder("export", history=[])),
    ("5 sweep folder", "trial.json empty history", "compare", folder("compare", history=[])),
    ("5 sweep folder", "mlflow-pending.jsonl names files outside", "report", folder("report", pending=True)),
    ("5 sweep folder", "mlflow-pending.jsonl names files outside", "export", folder("export", pending=True)),
    # the export above refuses the records and then exports, as it should: its cost is the export's own, shown here
    ("5 sweep folder", "reference: the same export, no pending file (not bad input)", "export", folder("export")),
    ("6 resume", "one flipped bit in model.safetensors", "resume",
     lambda d, b: [shutil.rmtree(d), shutil.copytree(b / "resume", d)] and ["resume", "runs/bad"]),
]


def timed(cmd: list[str], cwd: Path, timeout: float = 120) -> dict:
    """One child under /usr/bin/time (its own process group, killed whole on timeout): exit, wall s, peak MB."""
    t0, p = time.perf_counter(), subprocess.Popen(["/usr/bin/time", "-f", "@@TIME %e %M", *cmd], cwd=cwd, env=env(),
                                                  text=True, stdout=-1, stderr=-1, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
    wall = time.perf_counter() - t0
    peak = next((round(int(ln.split()[-1]) / 1024, 1) for ln in err.splitlines()[::-1] if ln.startswith("@@TIME ")), None)
    err = "\n".join(ln for ln in err.splitlines() if not ln.startswith("@@TIME "))
    return {"rc": p.returncode if wall < timeout else f"killed at {timeout} s", "wall_s": round(wall, 2),
            "peak_mb": peak, "stdout": out, "stderr": err}


def message(stdout: str, stderr: str) -> str:
    """The first error line, else warning line, else a stdout line saying `refused`, else stderr's last line."""
    lines = stderr.splitlines()
    hits = [[ln for ln in lines if ln.startswith(f"rslad-tune: {k}:")] for k in ("error", "warning")]
    hits += [["(stdout) " + ln for ln in stdout.splitlines() if "refused" in ln], ["(last stderr line) " + ln for ln in lines[-1:]]]
    return next((h[0] for h in hits if h), "(no stderr)")


def row(group, case, verb, argv=(), rc=None, wall_s=None, peak_mb=None, torch=None, message="", **more) -> dict:
    return {"group": group, "case": case, "verb": verb, "argv": list(argv), "rc": rc, "wall_s": wall_s, "peak_mb": peak_mb,
            "torch": torch, "traceback": False, "message": message, **more}


def run_case(group, case, verb, make, built: Path, tmp: Path, i: int) -> dict:
    (d := tmp / f"case{i:02d}").mkdir()
    try:
        argv = make(d, built)
    except NotRun as e:
        return row(group, case, verb, rc="not run", message=str(e))
    r = timed([sys.executable, "-c", WRAP, json.dumps(argv)], d)
    bench = [ln for ln in r["stdout"].splitlines() if ln.startswith("@@BENCH ")]
    info = json.loads(bench[-1][8:]) if bench else {}
    out = "\n".join(ln for ln in r["stdout"].splitlines() if not ln.startswith("@@BENCH "))
    shown = [a if len(a) < 60 else a[:57] + "..." for a in argv]
    return row(group, case, verb, [a.replace(str(d), "<case>") for a in shown], info.get("rc", r["rc"]), r["wall_s"],
               r["peak_mb"], info.get("torch"), message(out, r["stderr"]).replace(str(d), "<case>"), process_rc=r["rc"],
               vmhwm_mb=round(info["vmhwm_kib"] / 1024, 1) if info else None,
               traceback=info.get("traceback", "Traceback" in r["stderr"]))


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description="the cost of refusing each bad input (one fresh process per case)")
    ap.add_argument("--note", default="Nothing else ran on the machine.", help="what else ran (for the record)")
    note = ap.parse_args().note
    date = subprocess.run(["date", "-u"], capture_output=True, text=True, check=True).stdout.strip()
    rows = []
    for label, code in (("python -c \"import torch\"", "import torch"), ("python -c \"import yaml\"", "import yaml")):
        r = timed([sys.executable, "-c", code], ROOT)
        rows.append(row("0 baseline", label, "-", [], r["rc"], r["wall_s"], r["peak_mb"], code == "import torch"))
    with tempfile.TemporaryDirectory(prefix="bad-input-cost-") as tmp_name:
        (built := (tmp := Path(tmp_name)) / "built").mkdir()
        spec, t0 = {"tiny": TINY, "rel_tiny": REL_TINY, "good": GOOD, "space": yaml.safe_dump(GOOD)}, time.perf_counter()
        b = subprocess.run([sys.executable, "-c", BUILD, str(built), json.dumps(spec)], env=env(), text=True,
                           capture_output=True, check=False, timeout=600)
        if b.returncode:
            return print(b.stderr, file=sys.stderr) or 1
        print(f"inputs built in {time.perf_counter() - t0:.1f} s (one child: two tiny trainings)", flush=True)
        for i, c in enumerate(CASES):
            rows.append(r := run_case(*c, built, tmp, i))
            print(f"{r['case']} [{r['verb']}]: rc {r['rc']}, {r['wall_s']} s, {r['peak_mb']} MB, torch {r['torch']}", flush=True)
    write(rows, date, note)
    return 0


def write(rows: list[dict], date: str, note: str) -> None:
    command = "PYTHONPATH=. python -m bench.bad_input_cost"
    note += (" Peak MB = /usr/bin/time %M of the one child (its VmHWM is in the JSON). Each case: one fresh process, "
             "RSLAD_TUNE_OFFLINE=1, MLFLOW_TRACKING_URI and RAY_ADDRESS unset, cwd = the case's temp folder.")
    lines = ["# Cost of refusing bad input", "", f"- device: {DEVICE}", f"- date: {date}", f"- command: `{command}`",
             f"- note: {note}", "", "| group | case | verb | exit | wall s | peak MB | torch imported? | error line (first 120 chars) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        msg = r["message"][:120].replace("|", "\\|")
        tb = " **traceback**" if r["traceback"] else ""
        lines.append(f"| {r['group']} | {r['case']} | {r['verb']} | {r['rc']}{tb} | {r['wall_s'] or '-'} | {r['peak_mb'] or '-'} | "
                     f"{'-' if r['torch'] is None else 'yes' if r['torch'] else 'no'} | {msg} |")
    cases = [r for r in rows if r["group"] != "0 baseline" and r["wall_s"] is not None and "reference" not in r["case"]]
    refused = [r for r in cases if r["rc"] == 2]  # exit 0: the bad part refused (a warning), the good work done
    worst_t = max(refused, key=lambda r: r["wall_s"])
    worst_m = max(refused, key=lambda r: r["peak_mb"] or 0)
    carried = [f"{r['case']} ({r['verb']}): exit {r['rc']}, {r['wall_s']} s, {r['peak_mb']} MB" for r in cases if r["rc"] != 2]
    lines += ["", (f"Refused (exit 2), {len(refused)} cases: worst wall time {worst_t['wall_s']} s ({worst_t['case']}, "
                   f"{worst_t['verb']}); worst peak {worst_m['peak_mb']} MB ({worst_m['case']}, {worst_m['verb']}). "
                   f"Refused in part and carried on (compare with its reference row): {'; '.join(carried) or 'none'}. "
                   f"torch imported in {sum(bool(r['torch']) for r in cases)} of {len(cases)} cases run; exit code "
                   f"not 2 in {sum(r['rc'] != 2 for r in cases)}; tracebacks in {sum(r['traceback'] for r in cases)}.")]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "bench" / "bad_input_cost.md").write_text(text)
    (ROOT / "bench" / "bad_input_cost.json").write_text(json.dumps(
        {"device": DEVICE, "date": date, "command": command, "note": note, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
