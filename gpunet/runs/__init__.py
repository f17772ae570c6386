"""Runs: configs, training, evaluation, the run directory's files and sweeps."""
