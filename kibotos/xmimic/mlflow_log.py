"""Experiment tracking in MLflow, behind a flag (``kibotos train --mlflow URI``; off by
default: the metrics always go to ``progress.jsonl`` and, through the stack, ClickHouse).

``MLflowProgress`` wraps the training ``progress`` callback (``kibotos.xmimic.train``
calls it after every iteration): it logs the run's parameters once, then per iteration
(MLflow step = iteration) the training SR, every loss (``loss/<name>``), every reward
term (``reward/<term>``), env-steps and seconds, and passes the event on. It uses
``mlflow-skinny``'s tracking client only (no server): a ``file:`` URI or a plain
directory is a local file store (MLflow keeps that backend in maintenance mode and asks
for an opt-in, given here for local stores only), any other URI goes to that tracking
server or database.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from kibotos.xmimic.clips import XMimicError

EXPERIMENT = "kibotos-xmimic"


def tracking_uri(target: str) -> str:
    """``target`` as an MLflow tracking URI: a path becomes a ``file:`` store."""
    if "://" in target or target.startswith("file:"):
        return target
    return Path(target).expanduser().resolve().as_uri()


class MLflowProgress:
    def __init__(self, target: str, *, run_name: str, params: dict, inner: Callable[[dict], None] | None = None,
                 experiment: str = EXPERIMENT):
        uri = tracking_uri(target)
        if uri.startswith("file:"):  # the local file store is opt-in since MLflow 3
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise XMimicError("--mlflow needs mlflow-skinny (pip install mlflow-skinny)",
                              reason_code="xmimic_mlflow_unavailable") from exc
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        self.uri = uri
        self.inner = inner
        self.client.log_batch(self.run_id, params=_params(params))

    def __call__(self, event: dict) -> None:
        from mlflow.entities import Metric

        step, ts = int(event["iteration"]), int(1000 * event.get("seconds", 0.0))
        values = {"success_rate": event.get("success_rate"), "env_steps": event.get("env_steps"),
                  "seconds": event.get("seconds"), "episodes": event.get("episodes")}
        values.update({f"loss/{k}": v for k, v in (event.get("losses") or {}).items()})
        values.update({f"reward/{k}": v for k, v in (event.get("reward_terms") or {}).items()})
        metrics = [Metric(key=k, value=float(v), timestamp=ts, step=step) for k, v in sorted(values.items())
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=metrics)
        if self.inner:
            self.inner(event)

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def _params(params: dict) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)[:500]) for k, v in sorted(params.items()) if v is not None]
