"""Submit and schedule the compiled pipeline on a Kubeflow Pipelines cluster (kfp ``Client``).

The token comes from ``--token`` or ``$KFP_TOKEN`` (never printed). Schedules are recurring runs with at most one run
at a time and no catch-up, so a cluster that was down does not replay missed weeks.
"""

import functools
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DistillError, RunFailure, ServiceUnavailable
from ..settings import pipeline_arguments
from .pipeline import PIPELINE_NAME, ClusterSettings, compile_pipeline


def _kfp_errors(fn: Callable) -> Callable:
    """Turn the KFP client's connection and API errors into one line naming the host (exit 1, never a traceback)."""

    @functools.wraps(fn)
    def wrapper(host: str, *args: Any, **kwargs: Any) -> Any:
        import urllib3
        from kfp_server_api.exceptions import ApiException

        try:
            return fn(host, *args, **kwargs)
        except urllib3.exceptions.HTTPError as e:  # MaxRetryError, NewConnectionError, timeouts
            what = type(e).__name__
            raise ServiceUnavailable(f"cannot reach the Kubeflow Pipelines API at {host} ({what})") from None
        except ApiException as e:  # from None: its text carries the request headers, the token included
            if e.status in (401, 403):
                raise RunFailure(f"Kubeflow Pipelines at {host} refused the token ({e.status}): check it") from None
            raise RunFailure(f"Kubeflow Pipelines at {host} answered {e.status} {e.reason}") from None

    return wrapper


def client(host: str, namespace: str | None = None, token: str | None = None):
    """Return a ``kfp.Client`` for ``host`` (token from the argument or ``$KFP_TOKEN``)."""
    import kfp

    if not host or not host.startswith(("http://", "https://")):
        raise DistillError(f"--host '{host}' must be an http(s) URL of the KFP API")
    warnings.filterwarnings("ignore", message="This client only works with", category=FutureWarning)
    return kfp.Client(host=host, namespace=namespace, existing_token=token or os.environ.get("KFP_TOKEN") or None)


def _package(package: str | None, settings: ClusterSettings | None) -> str:
    if package:
        if not Path(package).is_file():
            raise DistillError(f"pipeline package '{package}' not found")
        return package
    return compile_pipeline(str(Path(tempfile.mkdtemp()) / "pipeline.yaml"), settings)


@_kfp_errors
def submit(
    host: str,
    params: dict[str, Any],
    experiment: str = PIPELINE_NAME,
    namespace: str | None = None,
    token: str | None = None,
    package: str | None = None,
    run_name: str | None = None,
    settings: ClusterSettings | None = None,
) -> dict[str, Any]:
    """Submit one run; return its id and name."""
    if "data_source" not in params:
        raise DistillError("submit needs data_source=...")
    params = pipeline_arguments(params)  # bad settings fail here, before any pod
    kfp_client = client(host, namespace, token)
    result = kfp_client.create_run_from_pipeline_package(
        _package(package, settings), arguments=params, run_name=run_name, experiment_name=experiment,
        namespace=namespace,
    )  # fmt: skip
    return {"run_id": result.run_id, "experiment": experiment, "host": host}


@_kfp_errors
def schedule(
    host: str,
    cron: str,
    params: dict[str, Any],
    name: str = f"{PIPELINE_NAME}-weekly",
    experiment: str = PIPELINE_NAME,
    namespace: str | None = None,
    token: str | None = None,
    package: str | None = None,
    settings: ClusterSettings | None = None,
) -> dict[str, Any]:
    """Create a recurring run (cron with 6 fields, e.g. ``0 0 3 * * 1``), max concurrency 1, no catch-up."""
    if len(cron.split()) != 6:
        raise DistillError(f"--cron '{cron}' must have 6 fields (seconds first), e.g. '0 0 3 * * 1'")
    if "data_source" not in params:
        raise DistillError("schedule needs data_source=...")
    params = pipeline_arguments(params)  # bad settings fail here, before any run is scheduled
    kfp_client = client(host, namespace, token)
    exp = kfp_client.create_experiment(experiment, namespace=namespace)
    job = kfp_client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=name, cron_expression=cron, max_concurrency=1, no_catchup=True,
        params=params, pipeline_package_path=_package(package, settings), enabled=True,
    )  # fmt: skip
    return {"recurring_run_id": job.recurring_run_id, "name": name, "cron": cron, "experiment": experiment}


@_kfp_errors
def list_schedules(host: str, namespace: str | None = None, token: str | None = None) -> list[dict[str, Any]]:
    """Return the recurring runs visible to this client."""
    response = client(host, namespace, token).list_recurring_runs(page_size=100, namespace=namespace)
    return [
        {"recurring_run_id": r.recurring_run_id, "name": r.display_name, "status": r.status,
         "cron": getattr(getattr(r.trigger, "cron_schedule", None), "cron", None)}
        for r in response.recurring_runs or []
    ]  # fmt: skip


@_kfp_errors
def delete_schedule(host: str, recurring_run_id: str, namespace: str | None = None, token: str | None = None) -> dict:
    """Delete a recurring run by id."""
    client(host, namespace, token).delete_recurring_run(recurring_run_id)
    return {"deleted": recurring_run_id}
