"""Datasets: the registry, IDX files, the search path and downloads, loading to the device, and the validation
split. Never imports runs, sklearn or apps."""
