"""The sweep side: the YAML, Ray Tune and MLflow adapters, the sweep folder, export, scoring and reports."""
