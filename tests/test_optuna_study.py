"""Optuna's view of a sweep: a trial ASHA stopped is PRUNED in the study (its last value kept as its last
intermediate value); a trial that ran every epoch is COMPLETE."""
import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from rslad_tune.sweep.optuna_study import PruningOptunaSearch, load_study, storage


def _result(epoch, value):
    return {"training_iteration": epoch, "pgd_acc": value}


def test_a_trial_stopped_early_is_pruned_with_its_last_value(tmp_path):
    db = tmp_path / "optuna.db"
    search = PruningOptunaSearch(space={"alpha": optuna.distributions.FloatDistribution(0.0, 1.0)}, metric="pgd_acc",
                                 mode="max", study_name="s", storage=storage(db), max_t=3)
    for tid in ("stopped", "full"):
        assert "alpha" in search.suggest(tid)
    search.on_trial_result("stopped", _result(1, 0.2))
    search.on_trial_complete("stopped", _result(2, 0.3))  # ASHA's stop: Tune gives that result only to complete
    for epoch in (1, 2):
        search.on_trial_result("full", _result(epoch, 0.1 * epoch))
    search.on_trial_complete("full", _result(3, 0.3))  # a trial's last result, too, reaches complete only
    stopped, full = load_study(db, "s").trials
    assert stopped.state == TrialState.PRUNED and stopped.intermediate_values == {1: 0.2, 2: 0.3}
    assert stopped.value == 0.3  # Optuna's value of a pruned trial: its last intermediate value
    assert full.state == TrialState.COMPLETE and full.value == 0.3 and full.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}
    assert load_study(db, "nope") is None and load_study(tmp_path / "gone.db", "s") is None


def test_rays_own_searcher_would_call_the_stopped_trial_complete():
    """What PruningOptunaSearch corrects: Ray's OptunaSearch tells a stopped trial COMPLETE."""
    search = OptunaSearch(space={"alpha": optuna.distributions.FloatDistribution(0.0, 1.0)}, metric="pgd_acc", mode="max")
    search.suggest("stopped")
    search.on_trial_complete("stopped", _result(2, 0.3))
    assert search._ot_study.trials[0].state == TrialState.COMPLETE


def test_a_trial_asked_for_after_the_last_save_is_failed_on_restore(tmp_path):
    """A driver killed between Optuna's ask and Tune's next searcher save leaves a RUNNING trial that no restored
    Ray trial will ever finish: the resumed sweep tells it FAIL; the trials Tune resumes stay RUNNING."""
    def searcher():
        return PruningOptunaSearch(space={"alpha": optuna.distributions.FloatDistribution(0.0, 1.0)}, metric="pgd_acc",
                                   mode="max", study_name="s", storage=storage(tmp_path / "optuna.db"), max_t=3)

    first = searcher()
    first.suggest("a")
    first.save(str(tmp_path / "searcher.pkl"))
    first.suggest("orphan")  # asked for, then the driver is killed before the next save
    second = searcher()
    second.restore(str(tmp_path / "searcher.pkl"))
    states = [t.state for t in load_study(tmp_path / "optuna.db", "s").trials]
    assert states == [TrialState.RUNNING, TrialState.FAIL]
    second.on_trial_complete("a", _result(3, 0.5))  # the resumed trial still finishes normally
    assert load_study(tmp_path / "optuna.db", "s").trials[0].state == TrialState.COMPLETE


def test_the_study_plots_leave_out_what_they_cannot_say(tmp_path, monkeypatch):
    """Parallel coordinates of every searched key; importance only over keys that varied among COMPLETE trials,
    and not drawn (one line why) with fewer than two of them."""
    from optuna.visualization import matplotlib as ovm

    from rslad_tune.sweep.plots import plot_study

    asked = []
    real = ovm.plot_param_importances
    monkeypatch.setattr(ovm, "plot_param_importances", lambda study, **kw: asked.append(kw["params"]) or real(study, **kw))
    study = optuna.create_study(direction="maximize")
    dist = {"alpha": optuna.distributions.FloatDistribution(0.0, 1.0),
            "epsilon": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study.add_trial(optuna.trial.create_trial(params={"alpha": 0.5, "epsilon": 0.1}, distributions=dist, value=0.4))
    written, skipped = plot_study(study, ["alpha", "epsilon"], tmp_path, "val_pgd_acc")
    assert [p.name for p in written] == ["parallel_coordinates.png"] and "it needs 2" in skipped[0]
    for a, v in ((0.7, 0.5), (0.9, 0.45)):
        study.add_trial(optuna.trial.create_trial(params={"alpha": a, "epsilon": 0.1}, distributions=dist, value=v))
    written, skipped = plot_study(study, ["alpha", "epsilon"], tmp_path, "val_pgd_acc")
    assert [p.name for p in written] == ["parallel_coordinates.png", "param_importances.png"] and not skipped
    assert asked == [["alpha"]]  # epsilon took one value: no share of importance for it
    assert (tmp_path / "param_importances.png").read_bytes()[:4] == b"\x89PNG"
