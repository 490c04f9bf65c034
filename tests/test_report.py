"""The teacher selection report's verdict: ranks only decided teachers, weighs differences against the noise,
answers "is a larger teacher better?" from the numbers, and plots error bars."""
import pytest

from rslad_tune.sweep.plots import plot_selection
from rslad_tune.sweep.report import format_markdown
from rslad_tune.sweep.selection_verdict import noise, verdict
from rslad_tune.sweep.stats import spearman


def _row(name: str, params: int, pgd20: list[float], *, method: str = "sat", trials: int | None = None) -> dict:
    students = [{"trial_id": f"{name}-{i}", "alpha": 0.75, "epsilon": 0.1, "seed": i, "val_pgd": p, "clean": p + 0.2,
                 "pgd20": p, "aa": p - 0.01, "n": 1000, "n_aa": 100} for i, p in enumerate(pgd20)]
    row = {"teacher": name, "params": params, "macs": 10 * params, "teacher_method": method, "teacher_clean": 0.85,
           "teacher_pgd20": 0.76, "teacher_n": 1000, "teacher_aa": 0.75, "teacher_aa_n": 500, "source": "zoo",
           "trials": trials if trials is not None else len(pgd20), "full_length": len(pgd20), "decided": bool(pgd20),
           "students": students}
    for key in ("val_pgd", "clean", "pgd20", "aa"):
        vals = [100 * s[key] for s in students]
        row[f"student_{key}_mean"] = sum(vals) / len(vals) if vals else None
        row[f"student_{key}_std"] = (sum((v - row[f"student_{key}_mean"]) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 \
            if len(vals) > 1 else None
        row[f"student_{key}_count"] = len(vals)
    return row


def test_a_teacher_whose_students_all_stopped_early_is_undecided_and_never_ranked():
    rows = [_row("small", 10_000, [0.60, 0.61]), _row("big", 200_000, [], trials=3)]
    v = verdict(rows)
    assert v["ranking"] == ["small"] and v["undecided"] == ["big"]
    md = format_markdown(rows)
    assert "| undecided | big |" in md and "| 1 | small |" in md and "3 (0)" in md
    assert "Undecided (no student trained every epoch at the compared hyper-parameters; not ranked): big" in md
    assert "Cannot tell" in md  # one decided size: the size question has no answer


def test_differences_are_weighed_against_the_pooled_spread_of_one_teachers_students():
    # spreads of 0.5 points within each teacher, seeds 0-2 shared: a - b is 5 points (paired sd 0.87), a - c 0.3
    rows = [_row("a", 10_000, [0.620, 0.625, 0.615]), _row("b", 50_000, [0.575, 0.565, 0.570]),
            _row("c", 200_000, [0.612, 0.622, 0.617])]
    sd, dof, source = noise(rows)
    assert sd == pytest.approx(0.5) and dof == 6 and source == "this sweep"
    v = verdict(rows)
    assert v["ranking"] == ["a", "c", "b"]
    real = {c["b"]: c["real"] for c in v["vs_best"]}
    assert real == {"c": False, "b": True}
    b = v["vs_best"][1]  # paired by seed: t(2) x sd of the differences / sqrt(3), Holm over the two comparisons
    assert b["paired"] and b["noise"] == pytest.approx(4.302653 * (0.75 ** 0.5) / 3 ** 0.5, rel=1e-5)
    assert b["p_holm"] == pytest.approx(2 * b["p"]) and b["p_holm"] < 0.05
    md = format_markdown(rows)
    assert "Within the noise of the best: c" in md and "Worse than the best beyond the noise: b" in md
    assert "Is a larger teacher better? Cannot tell at this number of seeds." in md  # c (largest) - a (smallest) = -0.3
    assert "smallest detectable" in md  # every "cannot tell" says what the seeds could have seen


def test_the_size_question_is_answered_whichever_way_the_numbers_fall():
    bigger_better = [_row("s", 10_000, [0.60, 0.602]), _row("m", 50_000, [0.62, 0.621]), _row("l", 200_000, [0.64, 0.6405])]
    v = verdict(bigger_better)
    assert v["largest_vs_smallest"]["real"] and v["size_spearman"] == pytest.approx(1.0)
    assert "Is a larger teacher better? Yes." in format_markdown(bigger_better)
    smaller_better = [_row("s", 10_000, [0.64, 0.641]), _row("l", 200_000, [0.60, 0.6015], method="trades")]
    assert "No — the smaller one is better" in format_markdown(smaller_better)


def test_one_student_per_teacher_gives_no_noise_estimate_and_says_so():
    rows = [_row("a", 10_000, [0.62]), _row("b", 50_000, [0.55])]
    v = verdict(rows)
    assert v["noise_std"] is None and not any(c["real"] for c in v["vs_best"])
    md = format_markdown(rows)
    assert "Noise unknown" in md and "Is a larger teacher better? Cannot tell without a noise estimate." in md


def test_spearman_handles_ties_and_too_few_points():
    assert spearman([1, 2, 3], [10, 20, 30]).rho == pytest.approx(1.0)
    assert spearman([1, 2, 3], [30, 20, 10]).rho == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]).rho is None and spearman([1, 1, 1], [1, 2, 3]).rho is None


def test_the_selection_plot_draws_error_bars_against_teacher_size(tmp_path, monkeypatch):
    import matplotlib.axes

    calls = []
    real = matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", lambda self, x, y, yerr=None, **kw: calls.append(
        (self.get_xscale(), list(x), list(yerr))) or real(self, x, y, yerr=yerr, **kw))
    rows = [_row("a", 10_000, [0.62, 0.63]), _row("b", 50_000, [0.60, 0.62]), _row("c", 200_000, [], trials=2)]
    path = plot_selection(rows, tmp_path / "s.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(calls) == 4  # PGD-20 and AA, on the size panel and on the teacher-robustness panel
    xs, yerr = calls[0][1], calls[0][2]
    assert len(xs) == 2 and xs[0] < xs[1] and yerr[0] == pytest.approx(100 * 0.01 / 2 ** 0.5)  # c not drawn
    calls.clear()  # with the verdict's noise: the standard error of each mean, noise / sqrt(n)
    plot_selection(rows, tmp_path / "s.png", noise=0.5)
    assert calls[0][2] == pytest.approx([0.5 / 2 ** 0.5] * 2)
    calls.clear()  # the no-teacher baseline, as selection_rows makes it: no teacher size or PGD-20 to draw it at
    base = _row("none", 0, [0.58, 0.59]) | {"baseline": True, "teacher_pgd20": None, "teacher_aa": None}
    plot_selection([*rows, base], tmp_path / "s.png")
    assert len(calls) == 4 and all(len(c[1]) == 2 for c in calls)


def test_teachers_are_compared_at_the_hyper_parameters_most_of_them_share():
    from types import SimpleNamespace

    from rslad_tune.sweep.report import comparison_set

    def trial(i, teacher, alpha, eps, seed=0):
        return SimpleNamespace(trial_id=f"t{i}", config={"teacher": teacher, "alpha": alpha, "epsilon": eps, "seed": seed,
                                                         "epochs": 6, "num_threads": 1})
    centre = [trial(i, t, 0.75, 0.1) for i, t in enumerate(["a", "b", "c"])]
    tpe = [trial(3, "a", 0.72, 0.116), trial(4, "b", 0.9, 0.085)]  # TPE's proposals: other alpha / epsilon
    assert comparison_set(centre + tpe) == {"t0", "t1", "t2"}
    seeds = [trial(5 + i, t, 0.75, 0.1, seed=s) for i, (s, t) in enumerate([(1, "a"), (1, "b"), (2, "a"), (2, "b")])]
    assert comparison_set(centre + seeds) == {"t0", "t1", "t2", "t5", "t6", "t7", "t8"}  # seeds replicate, not differ
    assert comparison_set([]) == set()
    # the quickstart's case: the baseline's SAT reads no alpha, so it joins the teachers' centre whatever TPE proposed
    base = SimpleNamespace(trial_id="t9", config={"teacher": "none", "method": "sat", "alpha": 0.75, "epsilon": 0.1,
                                                  "seed": 0, "epochs": 6, "num_threads": 1})
    rslad = [SimpleNamespace(trial_id=t.trial_id, config=t.config | {"method": "rslad"}) for t in centre + tpe]
    assert comparison_set(rslad + [base], {"none"}) == {"t0", "t1", "t2", "t9"}


def test_one_student_per_teacher_uses_the_ground_truths_noise_when_the_yaml_gives_it():
    rows = [_row("a", 10_000, [0.62]), _row("b", 50_000, [0.60]), _row("c", 200_000, [0.615])]
    v = verdict(rows, noise_std=0.5, noise_dof=12)
    assert v["noise_source"] == "report.noise_std" and v["noise_std"] == 0.5
    # t(12) x 0.5 x sqrt(2) = 1.54 points; a - b = 2.0 (p 0.015, Holm x2: 0.03), a - c = 0.5
    assert {c["b"]: c["real"] for c in v["vs_best"]} == {"c": False, "b": True}
    assert v["vs_best"][1]["noise"] == pytest.approx(2.178813 * 0.5 * 2 ** 0.5, rel=1e-5)
    assert not any(c["real"] for c in verdict(rows, noise_std=0.5)["vs_best"])  # no degrees of freedom: no interval
    md = format_markdown(rows, noise_std=0.5, noise_dof=12)
    assert "measured by a ground-truth sweep" in md and "Worse than the best beyond the noise: b" in md
    rows = [_row("a", 10_000, [0.62, 0.63]), _row("b", 50_000, [0.60, 0.61])]  # replicates: the sweep's own spread wins
    assert verdict(rows, noise_std=5.0)["noise_source"] == "this sweep"


def _base(name: str, pgd20: list[float]) -> dict:
    return _row(name, 0, pgd20) | {"baseline": True, "params": 0, "teacher_method": None}


@pytest.mark.parametrize("teachers,case,words", [
    # a teacher 3 points above the student trained alone, 3 shared seeds with a small spread: helps
    ([_row("good", 50_000, [0.66, 0.667, 0.655]), _row("meh", 10_000, [0.62, 0.625, 0.615])], "helps",
     ["**Distil, from good:** it helps by 3.07 ±", "over the student trained alone (none"]),
    # every teacher 2-3 points below: hurts
    ([_row("t1", 50_000, [0.61, 0.612, 0.605]), _row("t2", 10_000, [0.60, 0.605, 0.598])], "hurts",
     ["**Do not distil:**", "even the best, t1, hurts by"]),
    # within the noise of the baseline: cannot tell, with the smallest detectable difference
    ([_row("close", 50_000, [0.632, 0.628, 0.635])], "cannot_tell",
     ["**Cannot tell whether to distil at this number of seeds:**", "the smallest difference these seeds could detect"]),
])
def test_the_report_opens_with_should_i_distill(teachers, case, words):
    rows = [_base("none", [0.63, 0.635, 0.625])] + teachers
    v = verdict(rows)
    assert v["should_distill"]["case"] == case and v["reference"] == "none" and "none" not in v["ranking"]
    md = format_markdown(rows)
    first = md.splitlines()[0]
    assert all(w in first for w in words), first
    assert "| reference | none |" in md and len(v["vs_baseline"]) == len(teachers)


def test_one_student_each_without_a_noise_estimate_answers_with_no_interval():
    """The quickstart's case since the baseline runs to the end: one student per arm, no report.noise_std."""
    rows = [_base("none", [0.60]), _row("sat_w16", 50_000, [0.62]), _row("natural_w16", 10_000, [0.59])]
    v = verdict(rows)
    first = format_markdown(rows).splitlines()[0]
    assert v["should_distill"]["case"] == "cannot_tell" and v["should_distill"]["halfwidth"] is None
    assert first.startswith("**Cannot tell whether to distil: one student each, no interval.**"), first
    assert "sat_w16, minus the student trained alone (none; 1 seed): +2.00 points of test PGD-20, +2.00 of clean" in first, first


def test_a_pseudo_label_baseline_is_ranked_against_the_student_trained_alone():
    """few_labels.yaml's case: two baselines; the plain one is the reference even when robust self-training
    (the pseudo-label baseline) scores higher, and the pseudo one is an arm with its class like a teacher."""
    rows = [_base("pseudo", [0.66, 0.667, 0.655]) | {"pseudo": "natural_2k_w32"}, _base("none", [0.63, 0.635, 0.625]),
            _row("t1", 50_000, [0.62, 0.628, 0.618])]
    v = verdict(rows)
    assert v["reference"] == "none" and v["ranking"] == ["pseudo", "t1"]
    assert {b["teacher"]: b["class"] for b in v["both_axes"]}["pseudo"] == "helps"
    first = format_markdown(rows).splitlines()[0]
    assert first.startswith("**Distil, from pseudo (pseudo-label SAT: robust self-training"), first


def test_the_clean_axis_takes_its_noise_from_report_clean_noise_std_with_one_student_each():
    rows = [_base("none", [0.60]), _row("sat_w16", 50_000, [0.62])]
    no_clean = verdict(rows, noise_std=1.0, noise_dof=30)["both_axes"][0]["clean"]
    v = verdict(rows, noise_std=1.0, noise_dof=30, clean_noise_std=0.5, clean_noise_dof=30)
    clean = v["both_axes"][0]["clean"]
    assert no_clean["noise"] is None and v["clean_noise_std"] == 0.5
    # difference of means against the pooled sd: t(30) x 0.5 x sqrt(2) = 1.44 points; +2.00 is beyond it
    assert clean["diff"] == pytest.approx(2.0) and clean["noise"] == pytest.approx(1.444, abs=0.01)


def test_a_sweep_without_a_baseline_says_it_cannot_answer_should_i_distill():
    md = format_markdown([_row("a", 10_000, [0.62, 0.63])])
    assert md.splitlines()[0].startswith("Cannot tell whether to distil: this sweep has no no-teacher baseline")


def test_a_baseline_stopped_by_asha_is_named_with_where_it_stood():
    # the quickstart's case: ASHA stopped the student trained alone at epoch 1 and a teacher's student ran every epoch
    teacher = _row("sat_w16", 50_000, [0.571]) | {"curves": [[0.556, 0.570, 0.578]]}
    base = _row("none", 0, []) | {"baseline": True, "teacher_method": None, "trials": 1, "stopped_curves": [[0.520]]}
    v = verdict([teacher, base])
    first = format_markdown([teacher, base]).splitlines()[0]
    assert v["should_distill"]["case"] == "cannot_tell" and "no no-teacher baseline" not in first
    assert first.startswith("Cannot tell whether to distil: ASHA stopped every student trained alone (none) at epoch 1")
    assert "sat_w16 +3.60 points" in first and "no interval: set report.noise_std" in first, first
    # with the ground truth's noise the hint says how large a gap one student each could show
    first = format_markdown([teacher, base], noise_std=0.91, noise_dof=64).splitlines()[0]
    assert "±2.57 points" in first and "one under 3.66 could not be detected at 80 % power" in first, first


@pytest.mark.parametrize("n", [1, 12])
def test_the_selection_plot_is_readable_for_one_teacher_and_for_twelve(tmp_path, monkeypatch, n):
    """One teacher: the y axis is not zoomed into its 0.1-point error bar, and its label is not clipped; twelve:
    every label inside the figure."""
    from rslad_tune.sweep import plots

    figs = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, layout=True: figs.append(fig) or real(fig, path, layout))
    rows = [_row(f"teacher_{i}", int(10_000 * 1.5 ** i), [0.60 + 0.003 * i, 0.601 + 0.003 * i]) for i in range(n)]
    rows[0]["teacher_pgd20"] = 0.99  # the right edge of the robustness panel
    plot_selection(rows, tmp_path / "s.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figs[0]
    canvas = FigureCanvasAgg(fig)  # the figure was closed after saving: draw it again to measure its labels
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        assert hi - lo >= plots.MIN_SPAN_POINTS
        labels = [t for t in ax.texts if t.get_text().startswith("teacher_")]
        assert len(labels) == n
        for t in labels:  # inside the axes (matplotlib does not draw an annotation beyond them) and the figure
            box, area = t.get_window_extent(renderer), ax.get_window_extent(renderer)
            assert area.x0 - 1 <= box.x0 and box.x1 <= area.x1 + 1 and box.y1 <= fig.bbox.y1, t.get_text()
