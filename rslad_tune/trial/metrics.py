"""One metric vocabulary. A number is measured as a column of the suite (robustness.COLUMNS) or as a trial's own
PGD (scoring.pgd_column), and recorded under a metric key: this table is the one place that names each key, for a
trial's per-epoch metrics, `train`'s test_metrics.json, `export`'s metrics.json, MLflow metrics and a teacher's card.

The keys are those of every file and run written so far, which are read back: none of them may change.
"""
from __future__ import annotations

from typing import Mapping

PGD = "PGD"  # the role of a number's PGD column: a trial's own PGD (scoring.pgd_column); PGD_SAT in the report
TRIAL, CARD = "trial", "card"  # where a number is recorded
COUNT = "n"  # the key of the image count beside prefixed numbers (test_n)

# column (or the PGD role) -> its metric key, by where it is recorded:
#   trial: a trial's history (robustness.clean_and_pgd), test_metrics.json, export's metrics.json, MLflow metrics,
#          with a prefix there (val_, test_, best_test_)
#   card:  a teacher's card.json; without "_acc", the selection report's rows (teacher_pgd20, a student's pgd20)
KEYS: dict[str, dict[str, str]] = {
    "Clean": {TRIAL: "clean_acc", CARD: "clean_acc"},
    PGD: {TRIAL: "pgd_acc", CARD: "pgd20_acc"},  # the card's name is older than eval_steps: its PGD runs eval_steps
    "AA": {TRIAL: "aa_acc", CARD: "aa_acc"},
}


def metric_key(column: str, where: str = TRIAL, pgd: str = PGD) -> str:
    """The key of `column`'s number where it is recorded (`pgd`: the column that plays PGD there)."""
    return KEYS[PGD if column == pgd else column][where]


def short_name(column: str, pgd: str = PGD) -> str:
    """A card key without "_acc": the selection report's names (clean, pgd20, aa; teacher_<name> for its teacher)."""
    return metric_key(column, CARD, pgd).removesuffix("_acc")


def as_metrics(scores: Mapping[str, float], pgd: str = PGD, *, where: str = TRIAL, prefix: str = "",
               n: int | None = None) -> dict[str, float]:
    """scoring.score's {column: accuracy} as {prefix + metric key: accuracy}, and the image count under prefix + "n"
    when `n` is given: as_metrics({"Clean": .9, "PGD_SAT": .5}, "PGD_SAT", prefix="test_", n=100) ->
    {"test_clean_acc": .9, "test_pgd_acc": .5, "test_n": 100}."""
    out = {prefix + metric_key(col, where, pgd): v for col, v in scores.items()}
    return out | ({prefix + COUNT: n} if n is not None else {})


def accuracy_line(m: Mapping[str, float], prefix: str, pgd_name: str, images: str) -> str:
    """`<prefix> clean 0.7535, PGD-20 0.6442 <images>` of as_metrics(..., prefix=prefix, n=...): the line `train` and
    `export` print. `images` is formatted with the image count `n`."""
    word, pick = prefix.rstrip("_"), lambda col: m[prefix + metric_key(col)]  # noqa: E731
    return f"{word} clean {pick('Clean'):.4f}, {pgd_name} {pick(PGD):.4f} " + images.format(n=m[prefix + COUNT])
