"""Sweep plots: validation PGD accuracy per epoch of every trial (a trial ASHA stopped ends early, marked x), the
clean-vs-PGD Pareto front of the finished trials, the Optuna study's parallel coordinates and hyper-parameter
importance (Optuna's own matplotlib functions), and the teacher selection plot (each teacher's students,
mean ± std, against teacher size and robustness) with its curves: every arm's validation PGD-20 per epoch, the ASHA
rungs marked."""
from __future__ import annotations

from pathlib import Path


def plot_pgd_curves(curves: dict[str, tuple[list[int], list[float], bool]], max_epochs: int, path: Path,
                    title: str = "") -> Path:
    """curves: legend label (the trial's run name: id, teacher, alpha, epsilon) -> (epochs, validation pgd_acc,
    stopped early). Writes a PNG (temp file + rename)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for trial_id, (epochs, pgd, stopped) in sorted(curves.items()):
        line, = ax.plot(epochs, [100 * v for v in pgd], marker="o", ms=3, lw=1.2, label=trial_id)
        if stopped and epochs:
            ax.plot(epochs[-1], 100 * pgd[-1], marker="x", ms=9, mew=2, color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation PGD-20 accuracy (%)")
    ax.set_xlim(0.8, max_epochs + 0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title or "validation PGD accuracy per trial (x: stopped early by ASHA)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=1 if len(curves) <= 12 else 2, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return _save(fig, path)


def plot_pareto(points: list[dict], path: Path, title: str = "") -> Path:
    """points: {"label", "clean", "pgd", "full" (ran every epoch), "exported"} of the finished trials (validation
    accuracies in [0, 1]). The Pareto front (no other trial better on both) is joined; the exported one is starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for full, marker, name in ((True, "o", "ran every epoch"), (False, "x", "stopped early by ASHA")):
        pts = [p for p in points if bool(p["full"]) == full]
        if pts:
            ax.scatter([100 * p["clean"] for p in pts], [100 * p["pgd"] for p in pts], marker=marker, s=30, label=name)
    front = sorted((p for p in points if not any(q["clean"] >= p["clean"] and q["pgd"] >= p["pgd"] and
                                                 (q["clean"], q["pgd"]) != (p["clean"], p["pgd"]) for q in points)),
                   key=lambda p: p["clean"])
    ax.plot([100 * p["clean"] for p in front], [100 * p["pgd"] for p in front], lw=1, color="gray", label="Pareto front")
    for p in points:
        if p.get("exported"):
            ax.scatter([100 * p["clean"]], [100 * p["pgd"]], marker="*", s=250, facecolors="none", edgecolors="red",
                       linewidths=1.5, label=f"exported: {p['label']}")
    ax.set_xlabel("validation clean accuracy (%)")
    ax.set_ylabel("validation PGD-20 accuracy (%)")
    ax.margins(0.15)
    ax.set_title(title or "clean vs PGD-20 of the finished trials", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_study(study, params: list[str], folder: Path, target_name: str) -> tuple[list[Path], list[str]]:
    """The Optuna study's parallel coordinates (searched keys against the objective) and hyper-parameter importance,
    drawn by optuna.visualization.matplotlib into folder/{parallel_coordinates,param_importances}.png. Returns
    (the files written, one line per plot that could not be drawn and why: too few COMPLETE trials, or no searched
    key that varied among them, for importance)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # importance of a key that took one value among the finished trials is noise (fANOVA still gives it a share)
    varied = [k for k in params if len({repr(t.params.get(k)) for t in done}) > 1]
    written, skipped = [], []
    for name, draw, needs in (("parallel_coordinates.png", lambda: ovm.plot_parallel_coordinate(
                                   study, params=params, target_name=target_name), 1),
                              ("param_importances.png", lambda: ovm.plot_param_importances(
                                   study, params=varied, target_name=target_name), 2)):
        if len(done) < needs:
            skipped.append(f"{name} not drawn: {len(done)} trial(s) ran every epoch (COMPLETE in the study), "
                           f"it needs {needs}")
            continue
        if name == "param_importances.png" and not varied:
            skipped.append(f"{name} not drawn: no searched key took two values among the trials that ran every epoch")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for its matplotlib backend
                ax = draw()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            written.append(_save(fig, Path(folder) / name))
        except Exception as e:  # Optuna refuses the study (e.g. a searched key with one value only): no plot
            plt.close("all")
            skipped.append(f"{name} not drawn: {type(e).__name__}: {str(e).strip()[:150]}")
    return written, skipped


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


MIN_SPAN_POINTS = 4.0  # the selection plot's y axis spans at least this many accuracy points


def _min_span(ax, axis: str, span: float, log: bool = False) -> None:
    """Widen an axis that would zoom into noise (one point, or near-equal ones) to at least `span` around its
    centre (a factor for a log axis)."""
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    if log:
        mid = (lo * hi) ** 0.5
        new = (mid / span, mid * span) if hi / lo < span ** 2 else None
    else:
        mid = (lo + hi) / 2
        new = (mid - span / 2, mid + span / 2) if hi - lo < span else None
    if new:
        (ax.set_ylim if axis == "y" else ax.set_xlim)(*new)


def _readable_limits(ax, xs: list[float], log_x: bool) -> None:
    """Room on the right for the teacher labels (none clipped), and a sensible span for a single teacher."""
    if not xs:
        return
    lo, hi = min(xs), max(xs)
    if log_x:
        ax.set_xlim(lo / 1.6, hi * 3.0)
        _min_span(ax, "x", 3.0, log=True)
    else:
        pad = max(hi - lo, 1.0)
        ax.set_xlim(lo - 0.15 * pad, hi + 0.45 * pad)
        _min_span(ax, "x", 4.0)


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
        small = len(drawn) > 6  # twelve teachers: smaller labels, alternately above and below their point
        for i, (x, r) in enumerate(zip(xs, drawn)):
            ax.annotate(f"{r['teacher']} (n={r['student_pgd20_count']})", (x, r["student_pgd20_mean"]),
                        textcoords="offset points", xytext=(5, -10 if small and i % 2 else 6), fontsize=6 if small else 7)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e3:g}k"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        _readable_limits(ax, xs, log_x)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    _min_span(axes[0], "y", MIN_SPAN_POINTS)  # one teacher: not a 0.07-point axis (the y axis is shared)
    axes[0].set_ylabel("student test accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    undecided = [r["teacher"] for r in rows if not r.get("decided")]
    foot = "undecided (not ranked): " + ", ".join(undecided) if undecided else ""
    fig.legend(handles, labels, fontsize=8, loc="lower left", ncol=2, frameon=False)
    fig.text(0.99, 0.02, foot, ha="right", fontsize=7)
    fig.suptitle(title or "teacher selection", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path, layout=False)


def plot_selection_curves(rows: list[dict], rungs: list[int] | None, path: Path, title: str = "",
                          references: list[str] = ()) -> Path:
    """Every arm's validation PGD-20 per epoch, one colour per teacher (the baseline and other reference arms drawn
    thicker): its compared students solid, its other full-length students dashed, the students ASHA stopped ending
    in x. The rungs (the epochs where ASHA can stop a trial) are dotted vertical lines, so a teacher's lead at an
    early rung that later reverses shows. `rungs` None: not recorded by the sweep (written before they were)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    longest = 1
    for i, r in enumerate(rows):
        ref = r["teacher"] in references or r.get("baseline")
        colour, lw = f"C{i % 10}", 2.4 if ref else 1.2
        label = r["teacher"] + (" (reference)" if ref else "")
        for style, key in (("-", "curves"), ("--", "other_curves"), (":", "stopped_curves")):
            for curve in r.get(key) or []:
                epochs = range(1, len(curve) + 1)
                longest = max(longest, len(curve))
                ax.plot(epochs, [100 * v for v in curve], style, marker="o", ms=3, lw=lw, color=colour, label=label)
                label = None  # one legend entry per arm
                if key == "stopped_curves":
                    ax.plot(len(curve), 100 * curve[-1], marker="x", ms=9, mew=2, color=colour)
    for k, m in enumerate(rungs or []):
        ax.axvline(m, color="gray", ls=":", lw=1, label="ASHA rung" if k == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation PGD-20 accuracy (%)")
    ax.set_xlim(0.8, longest + 0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    note = "" if rungs is not None else " (ASHA rungs not recorded by this sweep)"
    ax.set_title((title or "validation PGD-20 per epoch of every arm") + note + "\nsolid: compared students; dashed: "
                 "other full-length; dotted, x: stopped by ASHA", fontsize=9)
    return _save(fig, path)
