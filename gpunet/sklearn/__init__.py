"""The scikit-learn estimator API over gpunet's model (needs the `sklearn` extra)."""
