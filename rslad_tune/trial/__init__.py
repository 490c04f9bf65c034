"""Everything that runs one trial, in plain PyTorch: config, data, models, attacks, methods, schedules,
robustness, the trainer. Imports nothing of Ray, MLflow, Optuna, teachers or the sweep side."""
