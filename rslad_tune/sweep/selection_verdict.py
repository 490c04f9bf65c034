"""The selection report's verdict: should I distil at all, and from which teacher?

The no-teacher baseline (a `baseline:` teacher: the same student trained with SAT/TRADES/MART alone at the same
budget) is the reference of every distillation claim (docs/statistics.md): each teacher's
students minus the baseline's, paired by seed where they share seeds, else against the pooled seed noise (this
sweep's replicates, or `report.noise_std` / `noise_dof` measured by a ground truth); t intervals at the degrees of
freedom at hand; Holm-corrected families (teachers against the baseline; teachers against the best); and the
smallest difference the seeds could detect (80 % power) beside every "cannot tell".
"""
from __future__ import annotations

import math

from . import stats
from .two_axes import AXIS_WORDS, classify, phrase, score, sign

OBJECTIVE_WORDS = {"pgd": "test PGD-20", "clean": "clean test accuracy", "balanced": "clean and PGD-20 weighted"}

ALPHA = 0.05


def _values(row: dict, axis: str = "pgd20") -> dict:
    """seed -> test PGD-20 (or clean accuracy: axis "clean"), in points, of a teacher's compared students."""
    return {s.get("seed", i): 100 * s[axis] for i, s in enumerate(row["students"]) if s.get(axis) is not None}


def noise(rows: list[dict], noise_std: float | None = None, noise_dof: int | None = None,
          axis: str = "pgd20") -> tuple[float | None, int, str | None]:
    """One teacher's students' spread over seeds: pooled over this sweep's teachers with two or more, else the
    YAML's (a ground truth's: report.noise_std, report.clean_noise_std for the clean axis), else unknown."""
    sd, dof = stats.pooled_std([list(_values(r, axis).values()) for r in rows if r["decided"]])
    if sd is not None:
        return sd, dof, "this sweep"
    if noise_std is not None:
        return noise_std, noise_dof or 0, "report.noise_std" if axis == "pgd20" else "report.clean_noise_std"
    return None, 0, None


def difference(a: dict, b: dict, sd: float | None, dof: int, axis: str = "pgd20") -> dict:
    """a's students minus b's (points of test PGD-20, or of clean accuracy): paired by seed when both have the same
    two or more seeds, else the difference of means against the pooled noise."""
    va, vb = _values(a, axis), _values(b, axis)
    if len(va) >= 2 and set(va) == set(vb):
        d = stats.paired_difference(va, vb)
    else:
        diff = sum(va.values()) / len(va) - sum(vb.values()) / len(vb)
        se = sd * math.sqrt(1 / len(va) + 1 / len(vb)) if sd is not None else None
        d = stats.t_difference(diff, se, dof, min(len(va), len(vb)))
    return {"a": a["teacher"], "b": b["teacher"], "axis": axis, "diff": d.diff, "noise": d.halfwidth, "n": d.n,
            "dof": d.dof, "p": d.pvalue, "mdd": d.mdd, "paired": d.paired}


def _holm(family: list[dict]) -> list[dict]:
    adjusted = stats.holm([1.0 if c["p"] is None else c["p"] for c in family]) if family else []
    for c, p in zip(family, adjusted):
        c["p_holm"] = p if c["p"] is not None else None
        c["real"] = c["p"] is not None and p < ALPHA
    return family


def _rung_evidence(stopped: list[dict], reference: dict, noise: tuple[float | None, int] | None = None) -> str:
    """What ASHA saw when it stopped the teachers' students: each one's validation PGD-20 at its last epoch minus the
    baseline student's at the same epoch (single students: no interval, a hint, not a finding)."""
    base = reference.get("curves") or []
    gaps = [(r["teacher"], len(c), 100 * (c[-1] - sum(b[len(c) - 1] for b in base) / len(base)))
            for r in stopped for c in r.get("stopped_curves", []) if base and all(len(b) >= len(c) for b in base)]
    if not gaps:
        return ""
    behind = [g for g in gaps if g[2] < 0]
    epochs = sorted({e for _, e, _ in gaps})
    return (f" ASHA stopped them at epoch {', '.join(map(str, epochs))}, where {len(behind)} of {len(gaps)} were behind the "
            f"student trained alone ({reference['teacher']}) in validation PGD-20 ("
            + ", ".join(f"{t} {d:+.2f}" for t, _, d in sorted(gaps, key=lambda g: -g[2])) + " points): one student each, "
            "so a hint, not an answer (" + _one_student_noise(noise) + "); the ground truth or more seeds "
            "(`scheduler: {type: fifo}`) answer it.")


def _one_student_noise(noise: tuple[float | None, int] | None) -> str:
    """What one student against one student can show, at the noise the YAML gives (report.noise_std / noise_dof)."""
    sd, dof = noise or (None, 0)
    if sd is None or not dof:
        return "no interval: set report.noise_std from a ground truth to get one"
    d = stats.t_difference(0.0, sd * 2 ** 0.5, dof, 1)
    return (f"at report.noise_std {sd:.2f} points, {dof} dof, a gap between two single students carries ±{d.halfwidth:.2f} "
            f"points, and one under {d.mdd:.2f} could not be detected at 80 % power")


def _baseline_stopped(base: dict, teachers: list[dict], noise: tuple[float | None, int] | None = None) -> str:
    """The baseline's students all stopped by ASHA: where they stood against the full-length teachers' students at
    the epoch they stopped (validation PGD-20; single students, a hint)."""
    gaps = [(t["teacher"], len(c), 100 * (sum(tc[len(c) - 1] for tc in t["curves"]) / len(t["curves"]) - c[-1]))
            for c in base.get("stopped_curves", []) for t in teachers
            if t.get("curves") and all(len(tc) >= len(c) for tc in t["curves"])]
    epochs = sorted({e for _, e, _ in gaps})
    where = (f" at epoch {', '.join(map(str, epochs))}, where the teachers' students were ahead of it by "
             + ", ".join(f"{t} {d:+.2f}" for t, _, d in sorted(gaps, key=lambda g: -g[2]))
             + " points of validation PGD-20 (one student each: a hint, not an answer; " + _one_student_noise(noise)
             + ")") if gaps else ""
    return (f"Cannot tell whether to distil: ASHA stopped every student trained alone ({base['teacher']}){where}, so "
            "no baseline student trained every epoch to compare on the test split; more samples or "
            "`scheduler: {type: fifo}` answer it.")


def both_axes(teachers: list[dict], reference: dict, pgd: tuple[float | None, int], clean: tuple[float | None, int]) -> list[dict]:
    """Every teacher against the reference on PGD-20 and on clean accuracy (each axis Holm-corrected over the
    teachers), and its class (two_axes.classify)."""
    on = {axis: _holm([difference(t, reference, *n, axis=axis) for t in teachers]) for axis, n in (("pgd20", pgd), ("clean", clean))}
    return [{"teacher": t["teacher"], "pgd20": p, "clean": c, "class": classify(p, c)}
            for t, p, c in zip(teachers, on["pgd20"], on["clean"])]


def _teachers(k: int) -> str:
    return f"{k} teacher{'s' if k != 1 else ''}"


def _seeds(c: dict) -> str:
    return f"{c['n']} seed{'s' if c['n'] != 1 else ''}" + (" paired" if c["paired"] else "")


def should_distill(teachers: list[dict], reference: dict | None, both: list[dict], stopped: list[dict] = (),
                   baseline_row: dict | None = None, noise: tuple[float | None, int] | None = None,
                   objective: str = "pgd", clean_weight: float = 0.5) -> dict:
    """The report's first sentence, on both axes (two_axes): distil (some teacher helps), a trade (better on one
    axis, worse on the other), do not distil (every teacher hurts), or cannot tell (with the smallest detectable
    differences). Among several teachers of a class, the objective's best is named."""
    if reference is None and baseline_row is not None:
        return {"case": "cannot_tell", "text": _baseline_stopped(baseline_row, teachers, noise)}
    if reference is None:
        return {"case": "no_baseline", "text": "Cannot tell whether to distil: this sweep has no no-teacher baseline "
                "(add a teacher `none: {baseline: sat}` and search it like any other)."}
    if not teachers:
        return {"case": "cannot_tell", "text": "Cannot tell whether to distil: no teacher has a student that trained "
                "every epoch at the compared hyper-parameters." + _rung_evidence(stopped, reference, noise)}

    def best(of: list[dict]) -> dict:
        return max(of, key=lambda b: score(b["pgd20"]["diff"], b["clean"]["diff"], objective, clean_weight))

    pseudo = {r["teacher"] for r in teachers if r.get("pseudo")}

    def named(name: str) -> str:
        return f"{name} (pseudo-label SAT: robust self-training on a teacher's argmax labels)" if name in pseudo else name

    classes = {b["teacher"]: b["class"] for b in both}
    base, k = reference["teacher"], len(both)
    vs = f"the student trained alone ({base}"
    if any(c == "helps" for c in classes.values()):
        b = best([b for b in both if b["class"] == "helps"])
        p, c = b["pgd20"], b["clean"]
        lead, other = ((f"it helps by {p['diff']:.2f} ± {p['noise']:.2f} points of test PGD-20", c) if sign(p) > 0 else
                       (f"it helps clean test accuracy by {c['diff']:.2f} ± {c['noise']:.2f} points", p))
        head = f"**Distil, from {named(b['teacher'])}:**"
        if objective != "balanced" and other["axis"] == ("pgd20" if objective == "pgd" else "clean"):
            # the gain is on the other axis and the objective's is within the noise: a loss below the smallest
            # detectable difference is not excluded (one seed at teacher.yaml's budget said "helps" where six found
            # a loss of 1.16 points of PGD-20), so the first words say what is and is not known
            gained = "clean" if other["axis"] == "pgd20" else "pgd20"
            head = (f"**Distil from {named(b['teacher'])} for {AXIS_WORDS[gained]}; {AXIS_WORDS[other['axis']]}, the "
                    "objective, is not resolved:**")
        case, text = "helps", (f"{head} {lead} over {vs}; {_seeds(p)}, Holm-corrected over "
                               f"{_teachers(k)}); {phrase(other)}.")
    elif any(c == "trade" for c in classes.values()):
        b = best([b for b in both if b["class"] == "trade"])
        up, down = (b["pgd20"], b["clean"]) if sign(b["pgd20"]) > 0 else (b["clean"], b["pgd20"])
        case, text = "trade", (f"**A trade, not a gain: distil from {named(b['teacher'])} only if {AXIS_WORDS[up['axis']]} matters "
                               f"more to you than {AXIS_WORDS[down['axis']]}.** Its students against {vs}; {_seeds(up)}, "
                               f"Holm-corrected over {_teachers(k)}): {phrase(up)}; {phrase(down)}.")
    elif all(c == "hurts" for c in classes.values()):
        b = best(both)
        worse = b["pgd20"] if sign(b["pgd20"]) < 0 else b["clean"]
        other = b["clean"] if worse is b["pgd20"] else b["pgd20"]
        case, text = "hurts", (f"**Do not distil:** every teacher's students score below {vs}) beyond the noise on at least "
                               f"one axis and above it on none; even the best, {named(b['teacher'])}, hurts by {-worse['diff']:.2f} ± "
                               f"{worse['noise']:.2f} points of {AXIS_WORDS[worse['axis']]} ({_seeds(worse)}, Holm-corrected); "
                               f"{phrase(other)}.")
    elif all(b["pgd20"]["noise"] is None for b in both):  # no replicate anywhere, no report.noise_std: one student each
        b = best(both)
        p, c = b["pgd20"], b["clean"]
        case, text = "cannot_tell", (f"**Cannot tell whether to distil: one student each, no interval.** The best "
                                     f"teacher, {named(b['teacher'])}, minus {vs}; {_seeds(p)}): {p['diff']:+.2f} points of "
                                     f"test PGD-20, {c['diff']:+.2f} of clean test accuracy; set `report.noise_std` from a "
                                     "ground truth, or train more seeds, to weigh it.")
    else:
        b = best([b for b in both if b["class"] == "cannot_tell"])
        p, c = b["pgd20"], b["clean"]
        mdd = " and ".join(f"{'unknown' if x['mdd'] is None else format(x['mdd'], '.2f')} points of {AXIS_WORDS[x['axis']]}"
                           for x in (p, c))
        case, text = "cannot_tell", (f"**Cannot tell whether to distil at this number of seeds:** the best teacher, "
                                     f"{named(b['teacher'])}, against {vs}; {_seeds(p)}): {phrase(p, False)}; {phrase(c, False)}; the smallest "
                                     f"difference these seeds could detect at 80 % power is {mdd}.")
    p = b["pgd20"]
    return {"case": case, "teacher": b["teacher"], "diff": p["diff"], "halfwidth": p["noise"], "n": p["n"],
            "mdd": p["mdd"], "clean_diff": b["clean"]["diff"], "clean_halfwidth": b["clean"]["noise"],
            "classes": classes, "objective": objective, "text": text}


def _objective_mean(r: dict, objective: str, clean_weight: float) -> float:
    clean = r.get("student_clean_mean")
    return score(r["student_pgd20_mean"], r["student_pgd20_mean"] if clean is None else clean, objective, clean_weight)


def verdict(rows: list[dict], noise_std: float | None = None, noise_dof: int | None = None, objective: str = "pgd",
            clean_weight: float = 0.5, clean_noise_std: float | None = None, clean_noise_dof: int | None = None) -> dict:
    """Teachers ranked by their compared students' mean under `objective` (test PGD-20, clean accuracy, or both
    weighted; the baseline apart, as the reference), and each teacher's class against it on both axes."""
    decided = sorted((r for r in rows if r["decided"]), key=lambda r: -_objective_mean(r, objective, clean_weight))
    # the reference: the student trained alone; a pseudo-label baseline (robust self-training) is an arm ranked
    # against it like a teacher, unless it is the only baseline left
    reference = next((r for r in decided if r.get("baseline") and not r.get("pseudo")),
                     next((r for r in decided if r.get("baseline")), None))
    teachers = [r for r in decided if r is not reference and (not r.get("baseline") or r.get("pseudo"))]
    sd, dof, source = noise(rows, noise_std, noise_dof)
    clean_sd, clean_dof, _ = noise(rows, clean_noise_std, clean_noise_dof, axis="clean")
    both = both_axes(teachers, reference, (sd, dof), (clean_sd, clean_dof)) if reference else []
    vs_baseline = [b["pgd20"] for b in both]
    out = {"ranking": [r["teacher"] for r in teachers], "reference": reference["teacher"] if reference else None,
           "undecided": [r["teacher"] for r in rows if not r["decided"]], "noise_std": sd, "noise_dof": dof,
           "noise_source": source, "clean_noise_std": clean_sd, "clean_noise_dof": clean_dof, "objective": objective,
           "clean_weight": clean_weight, "vs_baseline": vs_baseline, "both_axes": both,
           "should_distill": should_distill(teachers, reference, both,
                                            [r for r in rows if not r["decided"] and not r.get("baseline")],
                                            next((r for r in rows if r.get("baseline") and not r.get("pseudo")),
                                                 next((r for r in rows if r.get("baseline")), None)), (sd, dof),
                                            objective, clean_weight),
           "vs_best": _holm([difference(teachers[0], r, sd, dof) for r in teachers[1:]]) if teachers else [],
           "size_spearman": None, "largest_vs_smallest": None, "families": []}
    sized = [r for r in teachers if r.get("params")]
    rho = stats.spearman([r["params"] for r in sized], [r["student_pgd20_mean"] for r in sized])
    out["size_spearman"], out["size_spearman_p"] = rho.rho, rho.pvalue
    if len({r["params"] for r in sized}) > 1:
        big = max(sized, key=lambda r: (r["params"], r["student_pgd20_mean"]))
        small = min(sized, key=lambda r: (r["params"], -r["student_pgd20_mean"]))
        out["largest_vs_smallest"] = _holm([difference(big, small, sd, dof)])[0]
    by_method: dict[str, list[dict]] = {}
    for r in sized:
        if r.get("teacher_method"):
            by_method.setdefault(r["teacher_method"], []).append(r)
    families = [(m, sorted(rs, key=lambda r: r["params"])) for m, rs in sorted(by_method.items()) if len({r["params"] for r in rs}) > 1]
    out["families"] = [c | {"method": m} for (m, _), c in zip(families, _holm([difference(rs[-1], rs[0], sd, dof) for _, rs in families]))]
    return out


def _d(c: dict) -> str:
    if c["noise"] is None:
        return f"{c['a']} − {c['b']} = {c['diff']:+.2f} points (noise unknown)"
    mdd = "" if c["real"] or c["mdd"] is None else f"; smallest detectable {c['mdd']:.2f}"
    return (f"{c['a']} − {c['b']} = {c['diff']:+.2f} ± {c['noise']:.2f} points (95 % t-interval, {c['dof']} dof"
            f"{', paired by seed' if c['paired'] else ''}; {'beyond the noise' if c['real'] else 'within the noise'}{mdd})")


def verdict_words(v: dict, rows: list[dict]) -> list[str]:
    by = {r["teacher"]: r for r in rows}
    words = []  # the report opens with v["should_distill"]["text"]
    if v["both_axes"]:
        words.append("Every teacher against the student trained alone (" + v["reference"] + "), on both axes, each "
                     "Holm-corrected over the teachers: " + "; ".join(
                         f"**{b['teacher']}: {b['class'].replace('_', ' ')}** (PGD-20: {_d(b['pgd20'])}; clean: {_d(b['clean'])})"
                         for b in v["both_axes"]) + ".")
    if not v["ranking"]:
        return words + ["**Verdict: undecided.** No teacher has a student that trained every epoch: nothing can be ranked."]
    best = by[v["ranking"][0]]
    by_val = max((by[t] for t in v["ranking"]), key=lambda r: r["student_val_pgd_mean"])
    clean = "" if best.get("student_clean_mean") is None else f" and {best['student_clean_mean']:.2f} % clean"
    words.append(f"**Best teacher on the test split by the objective ({OBJECTIVE_WORDS[v.get('objective', 'pgd')]}): "
                 f"{best['teacher']}** — its {best['student_pgd20_count']} compared student(s) score "
                 f"{best['student_pgd20_mean']:.2f} % test PGD-20{clean} on average. The teacher best by validation "
                 f"PGD-20 (what ASHA ranks by): **{by_val['teacher']}** ({by_val['student_val_pgd_mean']:.2f} %).")
    if v["noise_std"] is None:
        words.append("**Noise unknown**: no teacher has two compared students and the YAML gives no `report.noise_std`, "
                     "so no difference below can be called real; run more seeds before trusting the ranking.")
    else:
        tied = [c["b"] for c in v["vs_best"] if not c["real"]]
        beaten = [c["b"] for c in v["vs_best"] if c["real"]]
        where = (f"pooled over this sweep's seeds, {v['noise_dof']} degrees of freedom" if v["noise_source"] == "this sweep"
                 else f"`report.noise_std`, measured by a ground-truth sweep ({v['noise_dof'] or 'unknown'} degrees of freedom); "
                 "this sweep has one student per teacher")
        words.append(f"Noise: students of one teacher spread by {v['noise_std']:.2f} points ({where}); a difference counts "
                     f"when a two-sided t-test rejects it at 5 %, Holm-corrected over the {len(v['vs_best'])} comparisons "
                     "with the best. "
                     + (f"Within the noise of the best: {', '.join(tied)}. " if tied else "")
                     + (f"Worse than the best beyond the noise: {', '.join(beaten)}." if beaten else
                        "No teacher is worse than the best beyond the noise." if not tied else ""))
    if v["undecided"]:
        words.append(f"Undecided (no student trained every epoch at the compared hyper-parameters; not ranked): "
                     f"{', '.join(v['undecided'])}.")
    lvs = v["largest_vs_smallest"]
    if lvs is None:
        words.append("**Is a larger teacher better?** Cannot tell: the decided teachers all have the same size.")
    else:
        answer = ("Cannot tell without a noise estimate" if lvs["noise"] is None else "Yes" if lvs["real"] and lvs["diff"] > 0
                  else "No — the smaller one is better" if lvs["real"] else "Cannot tell at this number of seeds")
        rho = "–" if v["size_spearman"] is None else f"{v['size_spearman']:+.2f} (exact p {v['size_spearman_p']:.2f})"
        words.append(f"**Is a larger teacher better? {answer}.** Largest against smallest: {_d(lvs)}; Spearman "
                     f"correlation of teacher parameters with student PGD-20 over {len(v['ranking'])} teachers: {rho}."
                     + "".join(f" Same recipe ({c['method']}), larger against smaller: {_d(c)}." for c in v["families"]))
    return words
