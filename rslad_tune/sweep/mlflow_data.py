"""What a sweep's MLflow runs record besides their numbers: the data they read, as MLflow datasets (`mlflow.data`:
name, source, digest, shape; no data is copied), and the machine's load while the sweep runs (MLflow's system
metrics: CPU, memory, GPU, under `system/` on the parent run; they need psutil, and pynvml for GPUs).

Datasets are plain JSON records here, so that a call the store missed can wait in the pending file and be
replayed (tracking.OPS["inputs"])."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..trial.config import TrialConfig
from ..trial.data import DATASETS, Splits, load_data

DATA_KEYS = ("dataset", "data_dir", "train_subset", "test_subset", "val_size", "labelled")  # what decides a trial's splits
CONTEXT_TAG = "mlflow.data.context"  # MLflow's own tag: the UI shows it beside the dataset's name


def split_records(cfg: TrialConfig, splits: Splits) -> list[dict[str, Any]]:
    """The training subset, the validation split and the test split as MLflow dataset records (with context)."""
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource

    from mlflow.data.dataset_source_registry import get_registered_sources

    record = DATASETS[cfg.dataset]
    folder = record.source(cfg.data_dir)  # None: generated in memory, recorded as its code (record.code_source)
    # a folder given as a string matches MLflow's two registered local sources ("" and file://) and warns that it is
    # ambiguous: the local source is named here instead
    local = next((s for s in get_registered_sources() if s._get_source_type() == "local"), None)
    source = ((local(str(folder)) if local else folder) if folder else CodeDatasetSource(record.code_source))
    records = []
    for context, part, x, y in (("training", "train", splits.train_x, splits.train_y),
                                ("validation", "val", splits.val_x, splits.val_y),
                                ("testing", "test", splits.test_x, splits.test_y)):
        ds = mlflow.data.from_numpy(x.detach().cpu().numpy(), targets=y.detach().cpu().numpy(), source=source,
                                    name=f"{cfg.dataset}-{part}")
        e = ds._to_mlflow_entity()
        records.append({"name": e.name, "digest": e.digest, "source_type": e.source_type, "source": e.source,
                        "schema": e.schema, "profile": e.profile, "context": context})
    return records


def to_inputs(records: list[dict[str, Any]]):
    """MLflow DatasetInput entities of split_records' records (for MlflowClient.log_inputs)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    return [DatasetInput(Dataset(**{k: v for k, v in r.items() if k != "context"}), [InputTag(CONTEXT_TAG, r["context"])])
            for r in records]


class SplitRecords:
    """split_records per distinct data keys of a trial config, loaded once each (on the CPU, in the driver)."""

    def __init__(self):
        self.cache: dict[tuple, list[dict]] = {}

    def __call__(self, config: dict) -> list[dict]:
        if "dataset" not in config:  # not a sweep's trial config (param_space always names its data)
            return []
        cfg = TrialConfig(**{k: v for k, v in config.items() if k in TrialConfig.__dataclass_fields__})
        key = tuple(getattr(cfg, k) for k in DATA_KEYS)
        if key not in self.cache:
            self.cache[key] = split_records(cfg, load_data(cfg, "cpu"))
        return self.cache[key]


def start_system_metrics(uri: str, run_id: str, log: Callable[[str], None], interval: float = 10.0,
                         resume: bool = False):
    """MLflow's system-metrics monitor on a run made with MlflowClient (mlflow.enable_system_metrics_logging acts on
    fluent runs only): CPU, memory, disk, network and, with pynvml, GPU every `interval` s (`resume`: a resumed
    sweep's parent run, whose steps continue). Returns the monitor (its .finish() stops it), or None when it cannot
    run here (one line)."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, tracking_uri=uri, resume_logging=resume)
        monitor.start()
        return monitor
    except Exception as e:  # psutil missing, or the monitor refuses this platform: the sweep runs without it
        log(f"system metrics are not logged: {type(e).__name__}: {str(e)[:150]}")
        return None


def stop_system_metrics(monitor, log: Callable[[str], None]) -> None:
    """Stop the monitor and log the samples of the last, unfinished interval: MLflow's monitor drops them, so a
    sweep shorter than one interval (10 s) would have no system metrics at all."""
    monitor.finish()
    try:
        monitor.collect_metrics()  # one sample at the stop, averaged with the interval's unlogged ones
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    except Exception as e:  # the store went away: the sweep's results stand without this sample
        log(f"the last system-metrics sample was not logged: {type(e).__name__}: {str(e)[:150]}")
