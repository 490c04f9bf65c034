"""The models of a sweep in MLflow: the exported student, registered; each teacher, logged once.

The student is logged as TorchScript through `mlflow.pytorch.log_model` (a scripted module: torch.jit.script, or
torch.jit.trace for an architecture TorchScript cannot compile). It loads with `mlflow.pytorch.load_model` in a
process without rslad_tune and without unpickling Python objects, and it stays a module: `.eval()`, `.train()`,
`parameters()`, `state_dict()` and a fine-tuning step work (torch.export's pt2 format loads an inference-only
GraphModule whose `.eval()` raises). A traced student's batch norm stays in eval mode under `.train()`.

A teacher is an MLflow logged model of the experiment (its card's numbers as params, its source, the source's
own fields such as the zoo name, and the sha256 of its weights as tags; model.safetensors, config.json and
card.json as artifacts), found again by that digest rather than logged twice. Each trial's run takes its teacher
as a model input and the tag `teacher_model_id`.
"""
from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from ..trial.files import file_digest
from . import quiet

CHAMPION = "champion"  # the alias of the registered model's latest exported version
DIGEST_TAG = "rslad_tune.weights_digest"
TEACHER_FILES = ("model.safetensors", "config.json", "card.json")
MAX_TEACHER_BYTES = 200 << 20  # larger weights (RobustBench's WRN-70-16) are named by digest and path, not copied
CARD_PARAMS = ("params", "macs", "clean_acc", "pgd20_acc", "aa_acc", "eval_n", "aa_n", "eval_epsilon")


def _with_tracking_uri(uri: str, call: Callable[[], Any]) -> Any:
    """call() with MLflow's global tracking URI set to `uri` (mlflow.<flavor>.log_model logs through it), then put back."""
    import mlflow

    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        return call()
    finally:
        mlflow.set_tracking_uri(before)


def scripted(model, example):
    """The eval-mode CPU model as TorchScript: scripted (train/eval behaviour kept), or traced where scripting fails."""
    import torch

    model = model.cpu().eval()
    with warnings.catch_warnings():  # torch.jit is deprecated upstream in favour of torch.export; it still works
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            return torch.jit.script(model)
        except Exception:  # an architecture TorchScript cannot compile (data-dependent branches): traced
            from .formats import to_torchscript

            return to_torchscript(model, example)


def register_student(uri: str | None, run_id: str | None, model, example, name: str, tags: dict[str, str],
                     log: Callable[[str], None] | None = print, description: str | None = None) -> str | None:
    """Log the student to its trial's run as an MLflow PyTorch model (TorchScript, see above), register it as a new
    version of `name`, tag and describe that version (Markdown, mlflow_notes.student_line) and move the alias
    `champion` to it. Returns the version; a store that is gone or refuses is one line, never raised: the exported
    files already stand."""
    if not uri or not run_id:
        if log:
            log(f"the student was not registered in MLflow: no run of its trial was found{f' in {uri}' if uri else ''}")
        return None
    try:
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        x = example.detach().cpu().float()
        script = scripted(model, x)
        with torch.no_grad():
            signature = infer_signature(x.numpy(), script(x).numpy())
        client = MlflowClient(uri)
        # created here, in the run's experiment (log_model alone would put it in the Default one, under ./mlruns)
        logged = client.create_logged_model(client.get_run(run_id).info.experiment_id, "student", run_id)
        with quiet.torchscript_logging():
            info = _with_tracking_uri(uri, lambda: mlflow.pytorch.log_model(
                script, name="student", run_id=run_id, model_id=logged.model_id, input_example=x.numpy(),
                signature=signature, serialization_format="pickle",
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"], registered_model_name=name))
        version = str(info.registered_model_version)
        for k, v in tags.items():
            client.set_model_version_tag(name, version, k, str(v))
        if description:
            client.update_model_version(name, version, description=description)
        client.set_registered_model_alias(name, CHAMPION, version)
    except Exception as e:  # the store, the registry or TorchScript: the files in best/ stand either way
        if log:
            first = (str(e).strip().splitlines() or [""])[0][:150]
            log(f"could not register the student as MLflow model {name!r} at {uri}: {type(e).__name__}: {first}")
        return None
    return version


def teacher_digest(folder: Path) -> str:
    """What names a teacher's content: the sha256 of its weights, or of its config.json when a loader owns them."""
    folder = Path(folder)
    return file_digest(folder / "model.safetensors" if (folder / "model.safetensors").is_file() else folder / "config.json")


def log_teacher(client: MlflowClient, experiment_id: str, run_id: str, name: str, folder: str | Path, card: dict,
                spec=None) -> str:
    """The logged model of one resolved teacher folder in the experiment (created once, found by its digest after);
    returns its model id. `spec` (teachers.source.TeacherSpec) adds the source and its fields as tags."""
    from mlflow.entities import LoggedModelStatus

    folder = Path(folder)
    digest = teacher_digest(folder)
    found = [m for m in client.search_logged_models([experiment_id], filter_string=f"tags.`{DIGEST_TAG}` = '{digest}'")
             if m.status == LoggedModelStatus.READY and m.name == f"teacher-{name}"]
    if found:
        return found[0].model_id
    tags = {DIGEST_TAG: digest, "rslad_tune.kind": "teacher", "teacher": name, "teacher_folder": str(folder)}
    if spec is not None:
        tags["teacher_source"] = spec.source
        tags.update({f"teacher_{k}": str(v) for k, v in spec.args.items() if isinstance(v, (str, int, float))})
    params = {k: str(card[k]) for k in CARD_PARAMS if card.get(k) is not None}
    model = client.create_logged_model(experiment_id, f"teacher-{name}", run_id, tags=tags, params=params,
                                       model_type="teacher")
    with tempfile.TemporaryDirectory() as tmp:
        for f in TEACHER_FILES:
            if (folder / f).is_file() and (f != "model.safetensors" or (folder / f).stat().st_size <= MAX_TEACHER_BYTES):
                shutil.copyfile(folder / f, Path(tmp) / f)
        client.log_model_artifacts(model.model_id, tmp)
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return model.model_id


def log_teachers(client: MlflowClient, experiment_id: str, run_id: str, teachers: dict, cards: dict[str, dict],
                 specs: dict, log: Callable[[str], None]) -> dict[str, str]:
    """Every teacher of a sweep (name -> teachers.resolved.ResolvedTeacher) as a logged model: name -> model id (a
    teacher the store refused is one line)."""
    ids = {}
    for name, teacher in teachers.items():
        try:
            ids[name] = log_teacher(client, experiment_id, run_id, name, teacher.folder, cards.get(name, {}), specs.get(name))
        except Exception as e:  # the store refused: the sweep runs, its trials are not linked to this teacher
            log(f"teacher {name}: not logged as an MLflow model ({type(e).__name__}: {str(e)[:150]})")
    return ids
