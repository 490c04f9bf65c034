"""bench.selection_regret: a replayed sweep goes through the tool's own scheduler, and a policy's pick is scored by
regret on the seeds it did not train, against its controls (numbers worked out by hand)."""
import pytest

from bench.selection_regret import (Policy, baseline_alone, markdown, near_best, race, random_race, replay, score,
                                    verdicts)

# a teacher whose student leads at epoch 1 and falls behind; the baseline (none) the other way round
T, B = [0.50, 0.55], [0.40, 0.60]


def test_a_replay_runs_a_reference_to_the_end_and_stops_the_others():
    assert replay([("t", T), ("none", B)], 1, 2, 2) == ("t", 3, ["t"])  # Ray's ASHA alone: none stopped at epoch 1
    assert replay([("t", T), ("none", B)], 1, 2, 2, {"none"}) == ("none", 4, ["none", "t"])
    # a reference out of the rungs does not raise the bar: the teacher after it is still judged against the first
    assert replay([("none", B), ("t", T), ("u", [0.45, 0.9])], 1, 2, 2, {"none"})[2] == ["none", "t"]


def _data():
    """Three seeds; the baseline 1.0 point better on the test split at every seed, the teacher's curves as above."""
    pgd = {"t": {0: 60.0, 1: 61.0, 2: 62.0}, "none": {0: 61.0, 1: 62.0, 2: 63.0}}
    curves = {"t": {s: T for s in range(3)}, "none": {s: B for s in range(3)}}
    return pgd, curves


def test_regret_is_scored_on_the_seeds_the_sweep_did_not_train_with_its_controls():
    pgd, curves = _data()
    policies = [Policy("reference", race(["t", "none"], 1, 2, 2, {"none"}), random_control="random"),
                Policy("in the race", race(["t", "none"], 1, 2, 2, set()), random_control="random"),
                Policy("random", random_race(["t"], 1, "none", 1, 2, 2), control=True, k=1),
                Policy("alone", baseline_alone("none", 2), control=True)]
    r = score(policies, pgd, curves, ["t", "none"], "none", max_t=2, draws=40, boots=20)
    rows = {x["policy"]: x for x in r["rows"]}
    assert r["seeds"] == [0, 1, 2] and r["choices"] == ["none", "t"] and r["ground_truth_epochs"] == 12
    assert rows["reference"]["regret"] == 0 and rows["reference"]["p_best"] == 1 and rows["reference"]["epochs"] == 4
    # the shuffled order decides: t first stops none at epoch 1 (pick t, regret 1.0); none first, both run on
    in_race = rows["in the race"]
    assert 0 < in_race["regret"] < 1 and in_race["regret"] == pytest.approx(1 - in_race["p_best"])
    assert rows["alone"]["regret"] == 0 and rows["alone"]["epochs"] == 2 and rows["alone"]["compute_fraction"] == 2 / 12
    assert rows["reference"]["regret_minus_random"] == 0 and rows["reference"]["regret_minus_random_interval"] == [0, 0]
    assert rows["reference"]["p_within_noise"] == 1 and rows["reference"]["within_is_baseline"] == 1
    words = verdicts(r)
    assert words[0].startswith("reference does not beat the random control beyond the bootstrap noise: regret +0.00")
    table = "\n".join(markdown(r))
    assert "| reference |" in table and "| 0.00 (0.00–0.00) |" in table


def test_within_the_noise_is_a_paired_holm_test_on_the_held_out_seeds():
    pgd = {"a": {0: 10.0, 1: 11.0, 2: 12.0, 3: 13.0}, "b": {0: 9.0, 1: 10.1, 2: 10.9, 3: 12.0},
           "c": {0: 9.9, 1: 10.5, 2: 12.2, 3: 12.8}}
    # a - b = 1.0, 0.9, 1.1, 1.0 (paired p ~ 1e-4); a - c = 0.1, 0.5, -0.2, 0.2 (p ~ 0.4)
    assert near_best(pgd, ["a", "c", "b"]) == ["a", "c"]


def test_a_curve_stops_on_pgd_and_picks_by_the_objective_at_the_kept_epoch():
    from bench.selection_regret import Curve
    # two reference arms (never stopped): t keeps epoch 2 (PGD 0.6) whose objective is 0.1; u keeps epoch 1 (0.2)
    t, u = Curve([0.5, 0.6], [0.9, 0.1]), Curve([0.55, 0.5], [0.2, 0.8])
    assert replay([("t", t), ("u", u)], 1, 2, 2, {"t", "u"})[0] == "u"
    assert replay([("t", t.stop), ("u", u.stop)], 1, 2, 2, {"t", "u"})[0] == "t"  # plain curves: by PGD


def test_a_remembered_replay_still_breaks_ties_by_the_order_of_this_sweep():
    a, b, c = [0.5, 0.7], [0.6, 0.7], [0.1, 0.2]  # a and b tie at 0.7: the earlier trial is picked
    assert replay([("a", a), ("b", b), ("t", c)], 1, 2, 2, {"a", "b"}) == ("a", 6, ["a", "b", "t"])
    assert replay([("b", b), ("t", c), ("a", a)], 1, 2, 2, {"a", "b"}) == ("b", 6, ["a", "b", "t"])
    # the stopped trial's epochs are remembered by the order of the trials ASHA decides, references anywhere
    s, w = [0.9, 0.9], [0.1, 0.1]
    assert replay([("s", s), ("a", a), ("w", w)], 1, 2, 2, {"a"}) == ("s", 5, ["a", "s"])
    assert replay([("a", a), ("s", s), ("w", w)], 1, 2, 2, {"a"}) == ("s", 5, ["a", "s"])
    assert replay([("w", w), ("s", s), ("a", a)], 1, 2, 2, {"a"}) == ("s", 6, ["a", "s", "w"])  # w first: not stopped


def test_other_reference_arms_join_every_control_and_the_pick_shares_are_counted():
    from bench.selection_regret import controls
    pgd = {"t": {0: 60.0, 1: 61.0, 2: 62.0}, "none": {0: 61.0, 1: 62.0, 2: 63.0}, "p": {0: 65.0, 1: 66.0, 2: 67.0}}
    curves = {"t": {s: T for s in range(3)}, "none": {s: B for s in range(3)}, "p": {s: [0.7, 0.8] for s in range(3)}}
    cs = controls(["t"], 1, "none", "true_prob", 1, 2, 2, "random", ("p",))
    assert [c.kept for c in cs] == ["1 random teacher + none + p", "t, none, p"]
    assert cs[1].name == "control: true_prob's worst 1 + none + p"
    r = score(cs + [Policy("alone", baseline_alone("none", 2), control=True)], pgd, curves, ["t", "none", "p"],
              "none", max_t=2, draws=20, boots=5, metric="test something", picks=True)
    rows = {x["policy"]: x for x in r["rows"]}
    assert rows["random"]["picks"] == {"p": 1.0} and rows["random"]["regret"] == 0 and rows["random"]["epochs"] == 6
    assert rows["alone"]["picks"] == {"none": 1.0} and rows["alone"]["regret"] == 4.0
    table = "\n".join(markdown(r))
    assert "(test something on all 10,000 test images, mean)" in table and "| p 100 % |" in table


def _cell(tmp_path):
    """A cell of two seeds: none, pseudo (a SAT baseline too: method sat, like none) and one teacher."""
    import json
    for i, (arm, seed, pgd, clean) in enumerate([("none", 0, 0.60, 0.80), ("none", 1, 0.62, 0.78),
                                                  ("pseudo", 0, 0.66, 0.76), ("pseudo", 1, 0.64, 0.74),
                                                  ("t", 0, 0.61, 0.85), ("t", 1, 0.63, 0.83)]):
        method = "rslad" if arm == "t" else "sat"
        hist = [{"pgd_acc": pgd - 0.02, "clean_acc": clean}, {"pgd_acc": pgd, "clean_acc": clean - 0.1},
                {"pgd_acc": pgd - 0.01, "clean_acc": clean}]
        (tmp_path / f"x_{i}.json").write_text(json.dumps({
            "config": {"teacher": arm, "seed": seed, "method": method}, "history": hist,
            "suite": {"PGD_SAT": pgd, "Clean": clean}}))
    (tmp_path / "sweep.json").write_text("{}")
    return tmp_path


def test_a_cell_reads_arms_by_teacher_and_scores_the_balanced_objective(tmp_path):
    from bench.selection_regret import Curve, load_cell, objective_data
    cell = load_cell([_cell(tmp_path)])
    assert sorted(cell["pgd"]) == ["none", "pseudo", "t"]  # pseudo is not folded into none
    assert cell["pgd"]["pseudo"][1] == pytest.approx(64.0) and cell["val_clean"]["t"][0] == [0.85, pytest.approx(0.75), 0.85]
    truth, curves = objective_data(cell, "pgd")
    assert truth is cell["pgd"] and curves is cell["val_pgd"]
    truth, curves = objective_data(cell, "balanced")
    assert truth["t"][0] == pytest.approx((61 + 85) / 2)
    assert isinstance(curves["t"][0], Curve) and curves["t"][0].pick == pytest.approx([(0.59 + 0.85) / 2, 0.68, 0.725])


def test_a_cell_replay_checks_the_yaml_references_and_builds_every_policy(tmp_path, monkeypatch):
    import argparse

    import bench.proxy_test
    from bench import asha_simulation, prescreen_replay
    from bench.selection_regret import add_cell_arguments, load_cell_replay
    zoo = tmp_path / "zoo"
    (zoo / "t").mkdir(parents=True)
    (zoo / "t" / "card.json").write_text("{}")
    monkeypatch.setattr(bench.proxy_test, "proxies_on_space",
                        lambda space, z, teachers: ({t: {"true_prob": 0.9, "clean_acc": 0.95} for t in teachers}, "stub"))
    ap = argparse.ArgumentParser()
    add_cell_arguments(ap)
    (tmp_path / "cell").mkdir()
    cell = str(_cell(tmp_path / "cell"))
    args = ap.parse_args(["--cell", cell, "--space", "search_spaces/few_labels.yaml", "--baseline", "none"])
    with pytest.raises(SystemExit, match="reference arms"):  # few_labels.yaml's are none and pseudo
        load_cell_replay(args, zoo)
    args = ap.parse_args(["--cell", cell, "--space", "search_spaces/few_labels.yaml", "--reference", "pseudo",
                          "--objective", "balanced"])
    c = load_cell_replay(args, zoo)
    assert (c.teachers, c.choices, c.grace, c.rf, c.max_t) == (["t"], ["t", "none", "pseudo"], 3, 2, 3)
    assert list(c.data) == ["balanced"]
    ps = asha_simulation.policies(c.teachers, c.proxies, c.max_t, c.baseline, c.extra, (c.grace, c.rf), c.space)
    assert ps[-1].name == "control: the reference arms alone (none + pseudo)" and ps[-1].kept == "none, pseudo"
    assert any(p.name.endswith("none and pseudo references (few_labels.yaml)") for p in ps)
    ps = prescreen_replay.policies(c.teachers, c.proxies, ["true_prob"], [1], c.max_t, c.baseline, c.extra, c.grace,
                                   c.rf, c.space)
    assert ps[0].kept == "t, none, pseudo" and ps[0].random_control == "control: random 1 + none + pseudo"
    assert "no prescreen (few_labels.yaml as it is)" in [p.name for p in ps]
