"""Every method of Table 1 trains through the real trainer, which computes exactly what the method declares."""
import math

import pytest

from rslad_tune.trial import trainer
from rslad_tune.trial.config import TrialConfig, check_trial_value
from rslad_tune.trial.errors import SpecError
from rslad_tune.trial.methods import METHODS
from rslad_tune.trial.models import build_model

TINY = dict(dataset="synthetic", train_subset=640, test_subset=100, val_size=128, arch="small_cnn", width=4,
            batch_size=64, lr=0.05, attack_steps=2, eval_steps=2, epsilon=0.05, eval_epsilon=0.05, num_threads=1)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_trains_one_epoch_with_what_it_declares(name, monkeypatch):
    cls = METHODS[name]
    seen = []

    class Recording(cls):
        def outer_loss(self, clean_logits, adv_logits, batch):
            seen.append({"clean": clean_logits is not None, "adv": adv_logits is not None,
                         "teacher": batch.teacher_logits is not None,
                         "student_clean": batch.student_clean_logits is not None,
                         "teacher_adv": batch.teacher_adv_logits is not None})
            return super().outer_loss(clean_logits, adv_logits, batch)

    make = trainer.make_method

    def make_recording(cfg):
        m = make(cfg)
        assert type(m) is cls
        m.__class__ = Recording
        return m

    monkeypatch.setattr(trainer, "make_method", make_recording)
    teacher = build_model("small_cnn", 1, 10, 4) if cls.needs_teacher else None
    cfg = TrialConfig(method=name, teacher="t" if cls.needs_teacher else None, epochs=1, **TINY)
    r = trainer.train_model(cfg, teacher=teacher)

    assert math.isfinite(r["history"][0]["train_loss"])
    assert len(seen) == len(r["splits"].train_x) // 64  # one outer loss per batch
    assert seen[0] == {"clean": cls.uses_clean, "adv": cls.adversarial, "teacher": cls.needs_teacher,
                       "student_clean": cls.attack_needs_clean, "teacher_adv": cls.needs_teacher_on_adv}


def test_method_weights_reach_the_method_from_the_trial_config():
    # each method gets exactly the knobs it declares (IAD reads temperature and iad_beta, not alpha or lam)
    m = trainer.make_method(TrialConfig(method="iad", alpha=0.25, temperature=2.0, lam=3.0, iad_beta=0.5))
    assert (m.temperature, m.iad_beta) == (2.0, 0.5) and not hasattr(m, "alpha") and not hasattr(m, "lam")
    r = trainer.make_method(TrialConfig(method="rslad", alpha=0.25, temperature=2.0, kl_reduction="paper"))
    assert (r.alpha, r.temperature, r.kl_reduction) == (0.25, 2.0, "paper")
    with pytest.raises(TypeError, match="reads none of"):
        METHODS["sat"](alpha=0.5)


@pytest.mark.parametrize("key,bad,good", [("lam", 0.0, 0.5), ("lam", -1.0, 6.0), ("iad_beta", -0.1, 0.0)])
def test_lam_and_iad_beta_are_validated(key, bad, good):
    with pytest.raises(SpecError, match=key):
        check_trial_value(key, bad)
    assert check_trial_value(key, good) == good
