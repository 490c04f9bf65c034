"""The paper comparison's verdict (bench/paper_verdict.py): paired-by-seed differences, loss scale, best-to-last."""
import pytest
import scipy.stats

from bench.paper_verdict import format_verdict, verdict


def row(method, seed, pgd, last_pgd, aa=None, kl="batchmean", lr=0.05):
    r = {"trial_id": f"{method}-{kl}-{lr}-{seed}", "method": method, "seed": seed, "arch": "small_cnn", "width": 4,
         "n": 10000, "PGD_SAT": pgd, "Clean": 0.8, "best_epoch": 12, "last_epoch": 16,
         "last": {"PGD_SAT": last_pgd}, "config": {"method": method, "seed": seed, "lr": lr, "kl_reduction": kl}}
    if aa is not None:
        r |= {"AA": aa, "n_aa": 500, "PGD_SAT_aa": pgd}
    return r


def test_paired_differences_and_noise_by_hand():
    rows = [row("rslad", 0, 0.70, 0.69, aa=0.68), row("rslad", 1, 0.71, 0.70), row("rslad", 2, 0.72, 0.72),
            row("sat", 0, 0.66, 0.62, aa=0.65), row("sat", 1, 0.68, 0.64), row("sat", 2, 0.67, 0.63),
            row("mart", 0, 0.70, 0.70, aa=0.69), row("mart", 1, 0.72, 0.70), row("mart", 2, 0.71, 0.71),
            row("natural", 0, 0.0, 0.0, aa=0.0), row("natural", 1, 0.01, 0.01), row("natural", 2, 0.0, 0.0)]
    v = verdict(rows)
    assert v["reference"] == "rslad (batchmean, lr 0.05)"
    natural, sat, mart = v["against_baselines"]
    assert natural["aa"]["mean"] == pytest.approx(68.0) and natural["aa"]["beyond_noise"]
    # rslad - sat per seed: 4, 3, 5 points -> mean 4, sd 1, half-interval 4.303 / sqrt(3)
    assert sat["pgd20"]["diffs"] == pytest.approx([4, 3, 5])
    assert sat["pgd20"]["std"] == pytest.approx(1.0)
    assert sat["pgd20"]["half_ci95"] == pytest.approx(scipy.stats.t.ppf(0.975, 2) / 3 ** 0.5)  # t at 2 dof, not a table
    assert sat["pgd20"]["beyond_noise"]
    assert sat["clean"]["diffs"] == pytest.approx([0, 0, 0])  # row() gives every trial 0.8 clean
    # rslad - mart: 0, -1, +1 -> mean 0, within noise
    assert mart["pgd20"]["mean"] == pytest.approx(0.0) and not mart["pgd20"]["beyond_noise"]
    # AA on seed 0 only: against 2 sd of the pair's PGD-20 seed spread combined with 500-image sampling error
    sampling = 100 * ((0.68 * 0.32 + 0.65 * 0.35) / 500) ** 0.5  # 2.93 points
    assert sat["aa"]["mean"] == pytest.approx(3.0) and sat["aa"]["sampling_std"] == pytest.approx(sampling)
    assert sat["aa"]["noise_std"] == pytest.approx((1 + sampling ** 2) ** 0.5)
    assert not sat["aa"]["beyond_noise"]  # 3 points on one seed of 500 images is within 2 x 3.1
    assert mart["aa"]["mean"] == pytest.approx(-1.0) and not mart["aa"]["beyond_noise"]
    drops = {d["arm"]: d for d in v["best_to_last"]}
    assert drops["sat (lr 0.05)"]["drop_mean"] == pytest.approx(4.0)
    assert drops["rslad (batchmean, lr 0.05)"]["drops"] == pytest.approx([1, 1, 0])
    assert "beyond noise" in format_verdict(v)


def test_loss_scale_pairs_batchmean_with_each_paper_arm():
    rows = [row("rslad", s, 0.70 + s / 100, 0.70) for s in range(3)]
    rows += [row("rslad", s, 0.60, 0.60, kl="paper") for s in range(3)]
    rows += [row("rslad", s, 0.69 + s / 100, 0.69, kl="paper", lr=0.5) for s in range(3)]
    v = verdict(rows)
    by_paper = {s["paper"]: s for s in v["loss_scale"]}
    assert set(by_paper) == {"rslad (paper, lr 0.05)", "rslad (paper, lr 0.5)"}
    assert by_paper["rslad (paper, lr 0.05)"]["pgd20"]["mean"] == pytest.approx(11.0)
    assert by_paper["rslad (paper, lr 0.5)"]["pgd20"]["diffs"] == pytest.approx([1, 1, 1])
    assert by_paper["rslad (paper, lr 0.5)"]["pgd20"]["std"] == pytest.approx(0.0)


def test_headroom_is_the_teacher_card_minus_the_mean_sat_student(tmp_path):
    from bench.paper_verdict import headroom, teacher_cards

    (tmp_path / "space.yaml").write_text("experiment: x\nteachers:\n  t: {zoo: fashion_mnist/sat_w16}\n"
                                         "trial: {method: rslad, teacher: t}\nsearch: {seed: {choice: [0, 1]}}\n")
    cards = teacher_cards([tmp_path])  # read from the shipped zoo card
    assert set(cards) == {"t"} and 0.5 < cards["t"]["pgd20_acc"] < 1
    rows = [row("sat", 0, 0.70, 0.70), row("sat", 1, 0.72, 0.70), row("rslad", 0, 0.75, 0.75)]
    (h,) = headroom(rows, {"t": {"pgd20_acc": 0.77}})
    assert h["sat_student_pgd20"] == pytest.approx(71.0) and h["headroom"] == pytest.approx(6.0) and h["sat_seeds"] == 2


def test_wall_time_sums_training_and_scoring_per_arm():
    rows = [row("rslad", s, 0.7, 0.7) | {"train_s": 600.0 + 60 * s, "seconds": 300.0} for s in range(3)]
    rows += [row("sat", 0, 0.7, 0.7) | {"train_s": None, "seconds": 120.0}]
    w = {x["arm"]: x for x in verdict(rows)["wall_time"]}
    assert w["rslad (batchmean, lr 0.05)"]["train_s"] == pytest.approx(1980.0)
    assert w["rslad (batchmean, lr 0.05)"]["train_s_per_trial"] == pytest.approx(660.0)
    assert w["rslad (batchmean, lr 0.05)"]["score_s"] == pytest.approx(900.0)
    assert w["sat (lr 0.05)"]["train_s_per_trial"] is None and w["sat (lr 0.05)"]["trials"] == 1
    md = format_verdict(verdict(rows))
    assert "| all | 4 | | | 33.0 | 17.0 |" in md
