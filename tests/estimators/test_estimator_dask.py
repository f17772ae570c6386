"""gpunet.MLPClassifier in a Dask cluster: a grid search under joblib's "dask" backend runs its fits on the
cluster's worker processes and finds what the same search finds here."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
distributed = pytest.importorskip("distributed", reason="Dask's distributed is not installed (pip install 'gpunet[dask]')")

import joblib  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from gpunet import MLPClassifier  # noqa: E402


def search():
    return GridSearchCV(MLPClassifier(max_iter=10, random_state=0, device="cpu"),
                        {"hidden_layer_sizes": [(16,), (32,)], "learning_rate_init": [0.01, 0.05]}, cv=3)


def test_grid_search_under_joblib_dask_runs_on_the_workers_and_matches_a_local_search():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    # Process workers, each with one BLAS thread (the nanny sets OPENBLAS_NUM_THREADS=1), as the local search below.
    with warnings.catch_warnings(), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        warnings.simplefilter("ignore", ConvergenceWarning)
        with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
            remote = search().fit(X, y)
        with threadpool_limits(1):
            local = search().fit(X, y)
        workers = set(cluster.scheduler_info["workers"])
    ran_on = {task["worker"] for task in stream.data}
    assert ran_on and ran_on <= workers  # the fits ran in the cluster's worker processes
    assert len(remote.cv_results_["params"]) == 4
    assert np.array_equal(remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"])
    assert remote.best_params_ == local.best_params_ and remote.best_score_ > 0.8
    assert np.array_equal(remote.predict(X), local.predict(X))
