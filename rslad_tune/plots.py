"""Sweep plots: validation PGD accuracy per epoch of every trial (a trial ASHA stopped ends early, marked x),
and the teacher selection plot (each teacher's best student against teacher size and robustness)."""
from __future__ import annotations

from pathlib import Path


def plot_pgd_curves(curves: dict[str, tuple[list[int], list[float], bool]], max_epochs: int, path: Path,
                    title: str = "") -> Path:
    """curves: trial id -> (epochs, validation pgd_acc, stopped early). Writes a PNG (temp file + rename)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for trial_id, (epochs, pgd, stopped) in sorted(curves.items()):
        line, = ax.plot(epochs, [100 * v for v in pgd], marker="o", ms=3, lw=1.2, label=trial_id[-8:])
        if stopped and epochs:
            ax.plot(epochs[-1], 100 * pgd[-1], marker="x", ms=9, mew=2, color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation PGD-20 accuracy (%)")
    ax.set_xlim(0.8, max_epochs + 0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title or "validation PGD accuracy per trial (x: stopped early by ASHA)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Temporary file + rename: an interrupted write never leaves a half PNG under the final name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_selection(rows: list[dict], path: Path, title: str = "") -> Path:
    """Two panels: each teacher's best student (PGD-20, AA) against teacher parameters and teacher PGD-20."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    done = [r for r in rows if "best_trial" in r]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120, sharey=True)
    for ax, key, label, log_x in ((axes[0], "params", "teacher parameters", True),
                                  (axes[1], "teacher_pgd20", "teacher PGD-20 accuracy (%)", False)):
        xs = [r[key] * (100 if key != "params" else 1) for r in done]
        ax.scatter(xs, [100 * r["student_pgd20"] for r in done], marker="o", s=40, label="student PGD-20")
        aa = [(x, r["student_aa"]) for x, r in zip(xs, done) if r.get("student_aa") is not None]
        if aa:
            ax.scatter([a[0] for a in aa], [100 * a[1] for a in aa], marker="s", s=40, label="student AutoAttack")
        for x, r in zip(xs, done):
            short = r.get("epochs") is not None and r.get("max_epochs") and r["epochs"] < r["max_epochs"]
            text = r["teacher"] + (f" ({r['epochs']}/{r['max_epochs']} ep.)" if short else "")
            ax.annotate(text, (x, 100 * r["student_pgd20"]), textcoords="offset points", xytext=(4, 5), fontsize=7)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e3:g}k"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best student's test accuracy (%)")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, frameon=False)
    fig.suptitle(title or "teacher selection: each teacher's best student", fontsize=10)
    return _save(fig, path)
