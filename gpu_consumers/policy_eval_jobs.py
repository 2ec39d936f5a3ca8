"""XMimic evaluation as a job kind of the GPU consumer group (``eval``).

    eval.requests ─► eval (kibotos.xmimic.evaluate on a Ray actor) ─► policy.evals (one record per split and clip)
                                                                   └► datasets.attributions + ledger.entries (a pass)

A request names the policy and its checkpoint in the object store, what to evaluate it on
(an XGen request id or a dataset version, or the clips already resolved), the dataset
versions it trained on, the config (YAML text) and the seed. The job evaluates it as
``kibotos eval`` does (SR, GSR, the open-loop reference per clip), answers with the
``policy.evals`` records (``kibotos.xmimic.evals.eval_rows``: the eval id names policy,
dataset, config version and seed; ``created_at`` is the request's time, so a redelivered
request writes the same rows), judges the policy by ``eval.pass_rule`` and, when it passes
and names dataset versions, adds the attribution records
(``kibotos.datasets.policy.record_policy_evaluation``: uuid5 entry ids, paid once). A
request with ``preview`` also renders the first clip's rollout (``kibotos.xmimic.preview``)
and stores it next to the policy, ``xmimic/policies/<policy_id>/preview.mp4``, where the read
API serves it to the policy page; a preview that cannot be rendered (no GL context) is
logged and the rows stand.

The kind is opt-in on a stack (``KIBOTOS_TRAINING_JOBS='["train","eval"]'``): each kind
holds its own Ray actors. Refusals (a dead letter with the reason code; the consumer lives
on): ``xmimic_request_invalid`` (policy id), the ``kibotos.xmimic`` codes
(``xmimic_checkpoint_invalid``, ``xmimic_clips_missing``, ``xmimic_dataset_unknown`` …),
``config_invalid``; an object-store failure is the validator's fault (retried, then
dead-lettered).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path

from prometheus_client import Counter

from gpu_consumers.registry import JobSpec, register_job
from kibotos.errors import KibotosError, SerializationError, ServiceError
from streams.stage import Output, Record, dead_letter
from topics.catalogue import Catalogue

log = logging.getLogger("kibotos.xmimic")

KIND = "eval"
EVALS = Counter("kibotos_policy_evals", "XMimic evaluation jobs finished: passed, failed (the rule), or refused",
                ["outcome"])
POLICY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_CHECKPOINT_BYTES = 1 << 31


class RequestRefused(KibotosError):
    reason_code = "xmimic_request_invalid"


class PolicyEvalStage:
    """The ``eval`` job: one evaluation per request (module docstring)."""

    def __init__(self, settings, catalogue: Catalogue, store, *, work_dir: Path | None = None):
        self.settings, self.catalogue, self.store = settings, catalogue, store
        self.id = self.processor_id = f"job_{KIND}"
        self.input = catalogue.get("eval.requests")
        self.inputs = (self.input,)
        self.outputs = (catalogue.get("policy.evals"), catalogue.get("datasets.attributions"),
                        catalogue.get("ledger.entries"), catalogue.dead_letters)
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="kibotos-eval-"))
        self.last: dict | None = None  # what the last request came to (tests, logs)

    def handle(self, record: Record) -> list[Output]:
        try:
            req = self.input.deserialize(record.value or b"")
        except SerializationError as exc:
            return [dead_letter(self.catalogue, record, self.processor_id, exc.reason_code, str(exc))]
        try:
            return self._evaluate(req)
        except ServiceError:
            raise  # the validator's fault: the consumer retries on a fresh actor
        except KibotosError as exc:
            EVALS.labels("refused").inc()
            log.warning("%s: %s refused: [%s] %s", self.processor_id, req.get("policy_id"), exc.reason_code, exc)
            return [dead_letter(self.catalogue, record, self.processor_id, exc.reason_code, str(exc))]

    def _evaluate(self, req: dict) -> list[Output]:
        from kibotos.xmimic.clips import load_clips
        from kibotos.xmimic.evals import eval_rows, judge, summarize
        from kibotos.xmimic.evaluate import evaluate
        from kibotos.xmimic.sources import download_clips, resolve_dataset

        pid = req["policy_id"]
        if not POLICY_ID.match(pid):
            raise RequestRefused(f"bad policy id {pid!r}")
        work = self.work_dir / pid
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            cfg = self._config(req, work)
            ckpt = work / "model.pt"
            try:
                ckpt.write_bytes(self.store.read_bytes(req["checkpoint_uri"], MAX_CHECKPOINT_BYTES))
            except ServiceError:
                raise
            except KibotosError as exc:
                from kibotos.xmimic.clips import XMimicError

                raise XMimicError(f"checkpoint {req['checkpoint_uri']}: {exc}", reason_code="xmimic_policy_unknown") from exc
            refs = list(req.get("clips") or [])
            if not refs:
                refs = [c.as_record() for c in resolve_dataset(req["dataset"], self.settings.home, self.store).clips]
            clips = load_clips(download_clips(refs, self.store, work / "clips"))
            rep = evaluate(clips, cfg, policy_path=ckpt, task=req.get("task"), heldout=bool(req.get("heldout", True)))
            preview_uri = self._preview(req, clips[0], cfg, ckpt, work) if req.get("preview") else None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows = eval_rows(rep, policy_id=pid, dataset=req["dataset"], seed=int(req.get("seed") or 0),
                         created_at_ms=req["requested_at"])
        summary = summarize(rows)
        verdict = judge(summary, cfg.eval.pass_rule)
        out = [Output(self.outputs[0], r) for r in rows]
        out += self._attribution(req, verdict, summary)
        EVALS.labels("passed" if verdict.passed else "failed").inc()
        self.last = {"eval_id": summary.eval_id, **summary.as_dict(), **verdict.as_dict(), "records": len(out),
                     "preview_uri": preview_uri}
        return out

    def _preview(self, req: dict, clip, cfg, ckpt: Path, work: Path) -> str | None:
        from kibotos.xmimic.preview import store_preview, write_preview

        try:
            info = write_preview(clip, cfg, ckpt, work / "preview.mp4", task=req.get("task"))
        except Exception as exc:  # no GL context, codec: the evaluation stands without a preview
            log.warning("%s: preview of %s failed: %s", self.processor_id, req["policy_id"], exc)
            return None
        return store_preview(self.store, req["policy_id"], Path(info["path"]))  # a store failure is retried

    def _config(self, req: dict, work: Path):
        from kibotos.xmimic.config import load_xmimic_config

        if not req.get("config_yaml"):
            return load_xmimic_config()
        path = work / "xmimic.yaml"
        path.write_text(req["config_yaml"])
        return load_xmimic_config(path)

    def _attribution(self, req: dict, verdict, summary) -> list[Output]:
        from kibotos.datasets.events import policy_events
        from kibotos.datasets.policy import record_policy_evaluation
        from kibotos.datasets.store import DatasetStore

        if not req.get("trained_on"):
            return []
        store = DatasetStore(self.settings.home / "datasets", objects=self.store)
        try:
            rec = record_policy_evaluation(store, req["policy_id"], list(req["trained_on"]), verdict.passed,
                                           metrics={**summary.as_dict(), "pass": verdict.as_dict()},
                                           checkpoint_uri=req["checkpoint_uri"], now_ms=req["requested_at"])
        except ServiceError:
            raise
        except KibotosError as exc:  # the rows stand; the attribution is reported, not paid
            log.warning("%s: %s: attribution skipped: [%s] %s", self.processor_id, req["policy_id"],
                        exc.reason_code, exc)
            return []
        return [Output(self.catalogue.get(topic_id), rec_) for topic_id, rec_ in policy_events(rec["attribution"])]


def build_eval_stage(settings, catalogue: Catalogue, store) -> PolicyEvalStage:
    """``build_stage`` of the job registry."""
    return PolicyEvalStage(settings, catalogue, store)


register_job(JobSpec(kind=KIND, input_topic="eval.requests", family="xmimic", build_stage=build_eval_stage))
