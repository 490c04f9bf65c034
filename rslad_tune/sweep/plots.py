"""Sweep plots: validation PGD accuracy per epoch of every trial (a trial ASHA stopped ends early, marked x),
and the teacher selection plot (each teacher's students, mean ± std, against teacher size and robustness)."""
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


def _save(fig, path: Path, layout: bool = True) -> Path:
    """Temporary file + rename: an interrupted write never leaves a half PNG under the final name."""
    import matplotlib.pyplot as plt

    if layout:
        fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_selection(rows: list[dict], path: Path, title: str = "", noise: float | None = None) -> Path:
    """Two panels: each decided teacher's compared students (mean test PGD-20 and AutoAttack) against teacher
    parameters (log axis) and teacher PGD-20; undecided teachers are named, not drawn. PGD-20 error bars are
    the standard error of each mean, noise / sqrt(n) (`noise`: the verdict's std of one teacher's students; without
    one, a teacher's own std); AutoAttack's are its std over two or more students."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    done = [r for r in rows if r.get("decided")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), dpi=120, sharey=True)
    for ax, key, label, log_x in ((axes[0], "params", "teacher parameters (size)", True),
                                  (axes[1], "teacher_pgd20", "teacher PGD-20 accuracy (%)", False)):
        # a no-teacher baseline has no teacher size or PGD-20 (its card has neither): no point on these axes
        drawn = [r for r in done if r.get(key) is not None and not (log_x and r[key] <= 0)]
        xs = [r[key] * (100 if key != "params" else 1) for r in drawn]
        for metric, marker, name, shift in (("pgd20", "o", "student PGD-20", 0.97), ("aa", "s", "student AutoAttack", 1.03)):
            pts = [(x, r) for x, r in zip(xs, drawn) if r.get(f"student_{metric}_mean") is not None]
            if not pts:
                continue
            # a small horizontal offset keeps the two error bars of one teacher apart
            px = [x * shift if log_x else x + (shift - 1) * 10 for x, _ in pts]
            err = [noise / r[f"student_{metric}_count"] ** 0.5 if metric == "pgd20" and noise is not None
                   else r[f"student_{metric}_std"] or 0 for _, r in pts]
            ax.errorbar(px, [r[f"student_{metric}_mean"] for _, r in pts], yerr=err, fmt=marker, ms=6, capsize=4,
                        label=name + (" (mean ± noise/√n)" if metric == "pgd20" and noise is not None else " (mean ± std)"))
        for x, r in zip(xs, drawn):
            ax.annotate(f"{r['teacher']} (n={r['student_pgd20_count']})", (x, r["student_pgd20_mean"]),
                        textcoords="offset points", xytext=(6, 6), fontsize=7)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e3:g}k"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("student test accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    undecided = [r["teacher"] for r in rows if not r.get("decided")]
    foot = "undecided (not ranked): " + ", ".join(undecided) if undecided else ""
    fig.legend(handles, labels, fontsize=8, loc="lower left", ncol=2, frameon=False)
    fig.text(0.99, 0.02, foot, ha="right", fontsize=7)
    fig.suptitle(title or "teacher selection", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path, layout=False)
