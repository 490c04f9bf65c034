"""The generated reference pages (docs/reference/keys.md, cli.md) match the code: regenerated in memory and compared
with the committed files, so adding, removing or changing a YAML key or a CLI option without
`python -m rslad_tune.sweep.keyref` fails here."""
from dataclasses import dataclass, field
from pathlib import Path

from rslad_tune.sweep import keyref
from rslad_tune.trial.config import TrialConfig, num

REF = Path(__file__).resolve().parents[1] / "docs" / "reference"
REGENERATE = "stale: regenerate with `python -m rslad_tune.sweep.keyref` and commit docs/reference/"


def test_the_key_reference_is_current():
    assert (REF / "keys.md").read_text() == keyref.keys_page(), REGENERATE


def test_the_cli_reference_is_current():
    assert (REF / "cli.md").read_text() == keyref.cli_page(), REGENERATE


@dataclass
class _WithANewKey(TrialConfig):
    new_knob: float = field(default=0.5, metadata=num(lo=0, hi=1))  # a key nobody documented


def test_a_new_field_makes_the_committed_page_stale(monkeypatch):
    monkeypatch.setattr(keyref, "TrialConfig", _WithANewKey)
    page = keyref.keys_page()
    assert "`trial.new_knob`" in page and "a number in [0, 1]" in page
    assert (REF / "keys.md").read_text() != page


def test_every_trial_key_has_a_row_with_its_bounds_and_help():
    page = keyref.keys_page()
    for row in ("| `trial.alpha` (searchable) | `float` | `0.833333` | a number in [0, 1] | RSLAD: weight",
                "| `tune.scheduler.grace_period` | `int` | `1` | an integer &gt;= 1 |",
                "| `report.noise_dof` |", "| `labels:` |", "| `trial.epochs` | `int` | `10` |"):
        assert row in page, row


def test_check_mode_says_stale_and_exits_1(tmp_path, capsys):
    assert keyref.main(["--out", str(tmp_path), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert keyref.main(["--out", str(tmp_path)]) == 0
    assert keyref.main(["--out", str(tmp_path), "--check"]) == 0
