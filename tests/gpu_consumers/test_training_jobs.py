"""The ``train`` job kind broker-free: a training request trains on clips read from the object
store (an XGen request's, or a dataset version's), publishes progress while it runs, stores
checkpoints under the run id, registers the policy, answers a finished run again without
training, resumes a run whose actor died from its last stored checkpoint, and refuses bad
requests with reason codes. Tiny scale: 2 environments, a few PPO iterations of 8 steps."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import threading
import time
import uuid

import pytest
import torch

from gpu_consumers.registry import get_job
from gpu_consumers.training_jobs import TrainingStage, policy_key
from kibotos.config.settings import Settings
from kibotos.datasets.builder import DatasetBuilder
from kibotos.datasets.spec import parse_spec
from kibotos.datasets.store import DatasetStore
from kibotos.objectstore import LocalObjectStore
from kibotos.xmimic.clipgen import make_clip_set
from kibotos.xmimic.config import DEFAULT_PATH
from kibotos.xmimic.sources import resolve_dataset
from streams.sink_rows import rows_for
from streams.stage import Record
from tests.fixtures.events import training_request, xgen_clip
from topics.catalogue import Catalogue


def tiny_config_yaml() -> str:
    text = DEFAULT_PATH.read_text()
    for old, new in (("every_iterations: 10", "every_iterations: 1"), ("num_steps_per_env: 24", "num_steps_per_env: 8"),
                     ("lease_ttl_s: 60", "lease_ttl_s: 3")):
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def clip_folders(tmp_path_factory):
    """Two XGen clips (the procedural pickup through every XGen stage)."""
    folders = sorted(make_clip_set(tmp_path_factory.mktemp("xgen"), duration_s=3.0).iterdir())
    return [f for f in folders if f.name.endswith(("base", "mirror"))][:2]


@pytest.fixture
def setup(tmp_path, clip_folders):
    store = LocalObjectStore(tmp_path / "objects")
    rid = str(uuid.uuid4())
    for folder in clip_folders:
        for name in ("clip.npz", "metadata.json"):
            store.put_file(folder / name, f"xgen/{rid}/clips/{folder.name}/{name}")
    settings = Settings(home=tmp_path / "home", object_store_url=store.root.as_uri())
    return settings, Catalogue(prefix="t."), store, rid


def stage_and_log(settings, catalogue, store, tmp_path, name="actor"):
    published = []
    stage = TrainingStage(settings, catalogue, store, publish=published.extend, work_dir=tmp_path / name,
                          progress_interval_s=0.0)
    return stage, published


def request(catalogue, **over) -> Record:
    fields = {"run_id": f"run-{uuid.uuid4().hex[:8]}", "dataset": "", "dataset_versions": [], "clips": [],
              "config_yaml": tiny_config_yaml(), "iterations": 3, "num_envs": 2, "backend": None, **over}
    rec = training_request(**fields)
    spec = catalogue.get("training.requests")
    return Record(spec.name, spec.serialize(rec), spec.key(rec))


def records(outs):
    return [o.record for o in outs]


def test_the_train_kind_is_registered_on_training_requests():
    spec = get_job("train")
    assert (spec.input_topic, spec.family, spec.gate) == ("training.requests", "xmimic", None)


def test_a_request_trains_publishes_progress_and_registers_the_policy(setup, tmp_path):
    settings, cat, store, rid = setup
    stage, published = stage_and_log(settings, cat, store, tmp_path)
    rec = request(cat, dataset=rid)
    run_id = cat.get("training.requests").deserialize(rec.value)["run_id"]
    [done] = records(stage.handle(rec))
    assert done["state"] == "done" and done["reason_code"] is None, done
    assert (done["iteration"], done["iterations"], done["policy_id"]) == (3, 3, f"teacher-{run_id}-it3")
    assert done["dataset_versions"] == [f"xgen:{rid}"] and done["env_steps"] == 3 * 2 * 8
    assert done["checkpoint_uri"] == store.uri_for(policy_key(done["policy_id"]))
    saved = torch.load(store.local_path(done["checkpoint_uri"]), weights_only=False)
    assert saved["infos"]["dataset_versions"] == [f"xgen:{rid}"] and saved["infos"]["iteration"] == 3
    progress = records(published)
    assert progress[0]["state"] == "running" and progress[0]["resumed_from"] == 0
    iters = [p for p in progress[1:]]
    assert [p["iteration"] for p in iters] == [1, 2, 3]
    assert all(p["state"] == "checkpointed" and p["checkpoint_uri"].endswith(f"xmimic/{run_id}/model_{p['iteration']}.pt")
               for p in iters)  # every_iterations: 1
    assert all(set(p["reward_terms"]) >= {"body_joint_pos", "contact"} and "value" in p["losses"] for p in iters)
    assert all(p["task"] and p["backend"] == "mujoco" and p["num_envs"] == 2 for p in iters)
    for n in (1, 2, 3):
        assert store.stat(f"xmimic/{run_id}/model_{n}.pt") is not None
    # the warehouse rows of the done record: the run, its last iteration, the policy
    tables = [t for t, _ in rows_for("training.progress", done)]
    assert tables == ["training_runs", "training_progress", "policies"]

    # a redelivered request for the finished run is answered, not trained again
    published.clear()
    [again] = records(stage.handle(rec))
    assert again == done and published == []


def test_a_run_whose_actor_died_resumes_from_its_stored_checkpoint(setup, tmp_path):
    settings, cat, store, rid = setup

    class ActorDied(BaseException):
        """Stands for the SIGKILL (the integration test kills a real actor)."""

    published = []

    def die_after_second_checkpoint(outs):
        published.extend(outs)
        if any(o.record["state"] == "checkpointed" and o.record["iteration"] == 2 for o in outs):
            raise ActorDied

    first = TrainingStage(settings, cat, store, publish=die_after_second_checkpoint, work_dir=tmp_path / "a1",
                          progress_interval_s=0.0)
    rec = request(cat, dataset=rid, iterations=4)
    with pytest.raises(ActorDied):
        first.handle(rec)
    shutil.rmtree(tmp_path / "a1")  # a fresh actor has nothing local: only the object store
    second, published2 = stage_and_log(settings, cat, store, tmp_path, "a2")
    [done] = records(second.handle(rec))
    again, start = records(published2)[:2]  # the checkpoint's record once more, then the resumed start
    assert (again["state"], again["iteration"]) == ("checkpointed", 2) and again["checkpoint_uri"].endswith("model_2.pt")
    assert start["state"] == "running" and start["resumed_from"] == 2 and start["iteration"] == 2
    assert [p["iteration"] for p in records(published2)[2:]] == [3, 4]
    assert done["state"] == "done" and done["iteration"] == 4 and done["resumed_from"] == 2


def test_a_checkpoint_stored_but_not_published_is_published_by_the_resumed_run(setup, tmp_path):
    """The actor dies after storing checkpoint 2 and before its progress record left: the
    resumed run publishes that record (from the checkpoint) so every iteration has its row."""
    settings, cat, store, rid = setup

    class ActorDied(BaseException):
        pass

    published = []

    def die_before_publishing_the_second(outs):
        if any(o.record["state"] == "checkpointed" and o.record["iteration"] == 2 for o in outs):
            raise ActorDied
        published.extend(outs)

    first = TrainingStage(settings, cat, store, publish=die_before_publishing_the_second, work_dir=tmp_path / "a1",
                          progress_interval_s=0.0)
    rec = request(cat, dataset=rid, iterations=3)
    with pytest.raises(ActorDied):
        first.handle(rec)
    assert store.stat(f"xmimic/{cat.get('training.requests').deserialize(rec.value)['run_id']}/model_2.pt")
    assert [p["iteration"] for p in records(published)] == [0, 1]  # the start and iteration 1 only
    shutil.rmtree(tmp_path / "a1")
    second, published2 = stage_and_log(settings, cat, store, tmp_path, "a2")
    [done] = records(second.handle(rec))
    every = records(published) + records(published2) + [done]
    iterations = {p["iteration"]: p for p in every if p["state"] != "running"}
    assert sorted(iterations) == [1, 2, 3], every
    assert set(iterations[2]["reward_terms"]) >= {"body_joint_pos", "contact"} and "value" in iterations[2]["losses"]


def test_a_dataset_version_resolves_to_its_xgen_clips_and_is_recorded(setup, tmp_path):
    settings, cat, store, rid = setup
    datasets = DatasetStore(settings.home / "datasets")
    datasets.create(parse_spec({"name": "pickups", "robots": ["unitree_g1"], "sources": ["xgen.clips"]}))
    builder = DatasetBuilder(datasets, "pickups")
    for info in store.list(f"xgen/{rid}/clips/"):
        if info.key.endswith("clip.npz"):
            cid = info.key.split("/")[-2]
            assert builder.offer("xgen.clips", xgen_clip(
                clip_id=cid, request_id=rid, clip_uri=store.uri_for(info.key),
                metadata_uri=store.uri_for(info.key.replace("clip.npz", "metadata.json")))) == "added"
    builder.publish()
    data = resolve_dataset("pickups", settings.home, store)
    assert data.dataset_versions == ("pickups@v1",) and len(data.clips) == 2
    assert resolve_dataset("pickups@v1", settings.home, store) == data
    assert resolve_dataset(rid, settings.home, store).dataset_versions == (f"xgen:{rid}",)

    stage, _ = stage_and_log(settings, cat, store, tmp_path)
    [done] = records(stage.handle(request(cat, dataset="pickups", iterations=1)))
    assert done["state"] == "done" and done["dataset"] == "pickups@v1" and done["dataset_versions"] == ["pickups@v1"]
    saved = torch.load(store.local_path(done["checkpoint_uri"]), weights_only=False)
    assert saved["infos"]["dataset_versions"] == ["pickups@v1"]


@pytest.mark.parametrize("over, reason", [
    ({"dataset": "no-such-dataset"}, "xmimic_dataset_unknown"),
    ({"dataset": "pickups@v9"}, "xmimic_dataset_unknown"),
    ({"run_id": "../escape"}, "xmimic_request_invalid"),
    ({"role": "critic"}, "xmimic_role_invalid"),
    ({"role": "nep"}, "xmimic_teacher_missing"),
    ({"role": "nep", "teacher_policy_id": "teacher-nowhere-it1"}, "xmimic_policy_unknown"),
    ({"config_yaml": "config_version: broken\n"}, "config_invalid"),
    ({"clips": [{"clip_id": "gone", "clip_uri": "file:///nowhere/clip.npz",
                 "metadata_uri": "file:///nowhere/metadata.json"}]}, "xmimic_clips_missing"),
])
def test_bad_requests_fail_with_a_reason_code(setup, tmp_path, over, reason):
    settings, cat, store, rid = setup
    stage, _ = stage_and_log(settings, cat, store, tmp_path)
    over = {"dataset": rid, **over}
    [failed] = records(stage.handle(request(cat, **over)))
    assert failed["state"] == "failed" and failed["reason_code"] == reason, failed


def test_an_undecodable_request_is_a_dead_letter(setup, tmp_path):
    settings, cat, store, _ = setup
    stage, _ = stage_and_log(settings, cat, store, tmp_path)
    [out] = stage.handle(Record(cat.get("training.requests").name, b"not avro"))
    assert out.topic.id == "dead.letters" and out.record["processor_id"] == "job_train"


def test_a_run_past_its_budget_is_checkpointed_and_requeued(setup, tmp_path):
    settings, cat, store, rid = setup
    published = []
    stage = TrainingStage(settings, cat, store, publish=published.extend, work_dir=tmp_path / "b", budget_s=0.5,
                          progress_interval_s=0.0)
    rec = request(cat, dataset=rid, iterations=50)
    outs = stage.handle(rec)
    assert [o.topic.id for o in outs] == ["training.progress", "training.requests"]
    state, again = records(outs)
    assert state["state"] == "checkpointed" and 1 <= state["iteration"] < 50
    assert again["run_id"] == cat.get("training.requests").deserialize(rec.value)["run_id"]
    assert store.stat(f"xmimic/{again['run_id']}/model_{state['iteration']}.pt") is not None


def test_the_train_kind_has_its_own_time_budget(tmp_path):
    from streams.stage import load_fault_policy

    policy = load_fault_policy()
    assert policy.budget_s("train") > policy.job_time_budget_s == policy.budget_s("ik")
    bad = tmp_path / "faults.yaml"
    bad.write_text("config_version: x\njob_time_budgets_s:\n  train: 0\n")
    from kibotos.errors import ConfigError

    with pytest.raises(ConfigError, match="job_time_budget"):
        load_fault_policy(bad)


def test_cli_via_stack_refuses_clips_and_needs_a_stack(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kibotos.cli.main import app

    monkeypatch.setenv("KIBOTOS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KIBOTOS_BOOTSTRAP_SERVERS", raising=False)
    cli = CliRunner()
    out = cli.invoke(app, ["train", "--via-stack", "--clips", str(tmp_path)])
    assert out.exit_code == 2 and "xmimic_arguments_invalid" in out.output
    out = cli.invoke(app, ["train", "--via-stack", "--dataset", "pickups@v1"])
    assert out.exit_code == 3 and "kibotos up" in out.output


def test_cli_in_process_trains_on_a_dataset_version_and_records_it(setup, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kibotos.cli.main import app

    settings, _, store, rid = setup
    datasets = DatasetStore(settings.home / "datasets")
    datasets.create(parse_spec({"name": "lifts", "robots": ["unitree_g1"], "sources": ["xgen.clips"]}))
    builder = DatasetBuilder(datasets, "lifts")
    for info in store.list(f"xgen/{rid}/clips/"):
        if info.key.endswith("clip.npz"):
            builder.offer("xgen.clips", xgen_clip(clip_id=info.key.split("/")[-2], clip_uri=store.uri_for(info.key),
                                                  metadata_uri=store.uri_for(info.key.replace("clip.npz", "metadata.json"))))
    builder.publish()
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(tiny_config_yaml())
    monkeypatch.setenv("KIBOTOS_HOME", str(settings.home))
    monkeypatch.setenv("KIBOTOS_OBJECT_STORE_URL", store.root.as_uri())
    out = CliRunner().invoke(app, ["train", "--dataset", "lifts@v1", "--config", str(cfg), "--num-envs", "2",
                                   "--iterations", "1", "--out", str(tmp_path / "run"), "--no-register"])
    assert out.exit_code == 0, out.output
    saved = torch.load(tmp_path / "run" / "checkpoints" / "model_1.pt", weights_only=False)
    assert saved["infos"]["dataset_versions"] == ["lifts@v1"] and len(saved["infos"]["clips"]) == 2


def test_a_student_trains_from_a_teacher_policy_trained_through_the_stack(setup, tmp_path):
    from kibotos.xmimic.stack_client import build_request

    settings, cat, store, rid = setup
    stage, _ = stage_and_log(settings, cat, store, tmp_path)
    [teacher] = records(stage.handle(request(cat, dataset=rid, iterations=1)))
    assert teacher["state"] == "done"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(tiny_config_yaml())
    # what `kibotos train --via-stack --role mocap --teacher <policy id>` sends
    req = build_request(run_id="student-1", role="mocap", dataset=rid, settings=settings, store=store, config=cfg,
                        teacher=teacher["policy_id"], iterations=1, num_envs=2)
    assert req["teacher_policy_id"] == teacher["policy_id"] and req["teacher_checkpoint_uri"] is None
    assert req["dataset_versions"] == [f"xgen:{rid}"] and len(req["clips"]) == 2
    spec = cat.get("training.requests")
    [student] = records(stage.handle(Record(spec.name, spec.serialize(req), spec.key(req))))
    assert student["state"] == "done" and student["policy_id"] == "mocap-student-1-it1", student
    saved = torch.load(store.local_path(student["checkpoint_uri"]), weights_only=False)
    assert saved["infos"]["role"] == "mocap" and saved["infos"]["teacher_policy_id"] == teacher["policy_id"]
    # a student of a checkpoint that is no teacher is refused
    bad = build_request(run_id="student-2", role="nep", dataset=rid, settings=settings, store=store, config=cfg,
                        teacher=str(store.local_path(student["checkpoint_uri"])), iterations=1, num_envs=2)
    assert bad["teacher_checkpoint_uri"]
    [refused] = records(stage.handle(Record(spec.name, spec.serialize(bad), spec.key(bad))))
    assert (refused["state"], refused["reason_code"]) == ("failed", "xmimic_teacher_invalid")


# --- one trainer per run (kibotos.xmimic.lease) ------------------------------------------

class CountingStore(LocalObjectStore):
    """The local store, counting the writes of each key (a checkpoint written twice means
    two jobs trained into one run)."""

    def __init__(self, root):
        super().__init__(root)
        self.writes: dict[str, int] = {}

    def put_file(self, src, key):
        self.writes[key] = self.writes.get(key, 0) + 1
        return super().put_file(src, key)


def _slow(published, seconds):
    def publish(outs):
        published.extend(outs)
        time.sleep(seconds)  # keeps the holder busy past the other job's wait (1.25 x the 3 s lease)
    return publish


def test_two_jobs_for_one_run_at_once_train_it_once(setup, tmp_path):
    settings, cat, _, rid = setup
    store = CountingStore(tmp_path / "objects")
    rec = request(cat, dataset=rid, iterations=10)
    run_id = cat.get("training.requests").deserialize(rec.value)["run_id"]
    logs: list[list] = [[], []]
    stages = [TrainingStage(settings, cat, store, publish=_slow(logs[i], 0.6), work_dir=tmp_path / f"actor{i}",
                            progress_interval_s=0.0) for i in range(2)]
    answers: dict[int, list] = {}
    threads = [threading.Thread(target=lambda i=i: answers.update({i: records(stages[i].handle(rec))}))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    reasons = sorted((a[0]["reason_code"] or "") for a in answers.values())
    assert reasons == ["", "xmimic_run_in_progress"] and len(answers[0]) == len(answers[1]) == 1, answers
    trainer = next(i for i, a in answers.items() if a[0]["reason_code"] is None)
    assert answers[trainer][0]["state"] == "done"
    assert records(logs[1 - trainer]) == []  # the other job published nothing of its own
    busy = answers[1 - trainer][0]
    assert busy["run_id"] == run_id and busy["state"] in ("running", "checkpointed")  # the holder's last record
    ckpts = {k: n for k, n in store.writes.items() if k.startswith(f"xmimic/{run_id}/model_")}
    assert sorted(ckpts) == sorted(f"xmimic/{run_id}/model_{n}.pt" for n in range(1, 11))
    assert set(ckpts.values()) == {1}  # every checkpoint written once: one trainer
    leases = sorted(i.key for i in store.list(f"xmimic/{run_id}/lease/"))
    assert leases == [f"xmimic/{run_id}/lease/0000000001.json"]  # taken once, never over
    assert json.loads(store.read_bytes(store.uri_for(leases[0]), 1 << 20))["released"] is True


def test_a_job_whose_run_is_taken_over_stops_writing(setup, tmp_path):
    """The holder taken for dead (here: another owner's generation 2 appears, as a
    contender's conditional create would make it) stops at its next iteration."""
    settings, cat, store, rid = setup
    rec = request(cat, dataset=rid, iterations=20)
    run_id = cat.get("training.requests").deserialize(rec.value)["run_id"]
    published = []

    def publish(outs):
        published.extend(outs)
        if any(o.record["iteration"] == 2 for o in outs):
            store.put_bytes(json.dumps({"owner": "other", "generation": 2, "beat": 0, "ttl_s": 3.0,
                                        "renewed_at": time.time(), "released": False,
                                        "record": dict(outs[-1].record, iteration=7)}).encode(),
                            f"xmimic/{run_id}/lease/0000000002.json")

    stage = TrainingStage(settings, cat, store, publish=publish, work_dir=tmp_path / "a", progress_interval_s=0.0)
    [answer] = records(stage.handle(rec))
    assert (answer["reason_code"], answer["iteration"]) == ("xmimic_run_in_progress", 7)  # the new holder's record
    stored = {int(i.key.rsplit("_", 1)[1][:-3]) for i in store.list(f"xmimic/{run_id}/") if "/model_" in i.key}
    assert max(stored) == 2 and store.stat(f"xmimic/{run_id}/final.json") is None  # its next write was refused


def _train_in_child(settings, home_objects, work_dir, value, key):
    """A job on its own process (SIGKILLed by the test)."""
    from topics.catalogue import Catalogue as Cat

    cat = Cat(prefix="t.")
    stage = TrainingStage(settings, cat, LocalObjectStore(home_objects), publish=lambda outs: None,
                          work_dir=work_dir, progress_interval_s=0.0)
    stage.handle(Record(cat.get("training.requests").name, value, key))


def test_a_killed_holder_is_taken_over_when_its_lease_goes_stale(setup, tmp_path):
    settings, cat, store, rid = setup
    rec = request(cat, dataset=rid, iterations=200)
    run_id = cat.get("training.requests").deserialize(rec.value)["run_id"]
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_train_in_child, args=(settings, store.root, tmp_path / "a1", rec.value, rec.key))
    child.start()
    try:
        deadline = time.monotonic() + 300
        while store.stat(f"xmimic/{run_id}/model_2.pt") is None:
            assert child.is_alive() and time.monotonic() < deadline, "the child never stored its 2nd checkpoint"
            time.sleep(0.1)
    finally:
        os.kill(child.pid, signal.SIGKILL)  # no finally runs: the lease stays, unreleased
        child.join(30)
    lease1 = json.loads(store.read_bytes(store.uri_for(f"xmimic/{run_id}/lease/0000000001.json"), 1 << 20))
    assert lease1["released"] is False
    stage, published = stage_and_log(settings, cat, store, tmp_path, "a2")
    stored = max(int(i.key.rsplit("_", 1)[1][:-3]) for i in store.list(f"xmimic/{run_id}/") if "/model_" in i.key)
    rec2 = request(cat, dataset=rid, iterations=stored + 2, run_id=run_id)  # the same run, asked again
    t0 = time.monotonic()
    [done] = records(stage.handle(rec2))
    assert time.monotonic() - t0 >= 3.0  # it waited for the dead holder's lease to go stale
    assert done["state"] == "done" and done["resumed_from"] == stored >= 2, done
    assert records(published)[0]["resumed_from"] == done["resumed_from"]
    assert store.stat(f"xmimic/{run_id}/lease/0000000002.json") is not None  # taken over: generation 2
