"""Sweep plots: validation PGD accuracy per epoch of every trial; a trial ASHA stopped ends early (marked x)."""
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
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
