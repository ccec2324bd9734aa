"""Figure and table scripts: each module is importable and runnable (python -m experiments.NAME)."""
