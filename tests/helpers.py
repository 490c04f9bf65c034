"""Shared bits of the slow end-to-end tests."""
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_grid_sweep(experiment: str) -> dict:
    """Two tiny SAT trials on synthetic data (a grid over lr, FIFO): a sweep that runs in seconds."""
    return {
        "experiment": experiment,
        "data": {"dataset": "synthetic", "train_subset": 400, "test_subset": 100, "val_size": 100},
        "trial": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 2, "attack_steps": 1, "eval_steps": 2,
                  "batch_size": 32},
        "search": {"lr": {"grid": [0.02, 0.05]}},
        "tune": {"num_samples": 1, "max_concurrent": 2, "scheduler": {"type": "fifo"}, "searcher": {"type": "random"},
                 "resources": {"cpu": 1}},
    }


def planted_sweep_folder(tmp_path, space: dict):
    """runs/bad: a sweep folder of `space` that this tool did not write (a pickle planted beside its YAML), the
    folder `--resume` must refuse; the YAML is also at tmp_path/space.yaml, the file a resume names."""
    import json

    import yaml

    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    exp = tmp_path / "runs" / "bad"
    exp.mkdir(parents=True)
    (exp / "sweep.json").write_text(json.dumps({"experiment": "bad", "space": str(tmp_path / "space.yaml")}))
    (exp / "space.yaml").write_text((tmp_path / "space.yaml").read_text())
    (exp / "tuner.pkl").write_bytes(b"\x80\x04N.")
    return exp
