"""One script per DVC stage (python -m stages.<name>); see dvc.yaml."""
