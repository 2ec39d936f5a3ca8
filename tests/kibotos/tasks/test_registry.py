"""Task schemas: the packaged ones (every one smoke-tested), lookups, and every way a
schema file is refused."""

from __future__ import annotations

import pytest
import yaml

from kibotos.errors import ConfigError
from kibotos.robots import list_robots
from kibotos.tasks import TaskRegistry, UnknownTask, get_task, list_tasks, load_schema
from kibotos.tasks.registry import SCHEMA_DIR

PICK_PLACE = yaml.safe_load((SCHEMA_DIR / "pick_place.v1.yaml").read_text())


def test_packaged_tasks():
    assert {("cargo_pickup", "1"), ("pick_place", "1")} <= set(list_tasks())
    assert get_task("cargo_pickup", "1").robot_models == ("unitree_g1",)
    assert "franka_panda" in get_task("pick_place", "1").robot_models


@pytest.mark.parametrize("task", list_tasks(), ids=[f"{t}-v{v}" for t, v in list_tasks()])
def test_every_packaged_schema_is_usable(task):
    schema = get_task(*task)
    assert schema.key == task
    assert any(schema.applies_to(m, r) for m, r in list_robots())
    assert schema.phases and schema.predicates
    assert schema.model_dump(mode="json")  # JSON-safe thresholds for reports


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UnknownTask) as info:
        get_task("juggling", "1")
    assert info.value.reason_code == "unknown_task"
    for task_id, version in list_tasks():
        assert f"{task_id} v{version}" in str(info.value)
    with pytest.raises(UnknownTask):
        get_task("pick_place", "2")


def test_applies_to_by_model_or_exact_revision():
    schema = get_task("pick_place", "1")
    assert schema.applies_to("ur5", "any-revision")
    assert not schema.applies_to("unitree_g1", "29dof-rev1.0")
    exact = schema.model_copy(update={"robot_models": ("ur5@joint-limited-v1",)})
    assert exact.applies_to("ur5", "joint-limited-v1") and not exact.applies_to("ur5", "other")


def _write(tmp_path, doc, name="pick_place.v1.yaml"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def _edit(fn):
    doc = yaml.safe_load(yaml.safe_dump(PICK_PLACE))
    fn(doc)
    return doc


@pytest.mark.parametrize("doc, message", [
    ("task_id: [unclosed", "cannot read"),
    (_edit(lambda d: d.pop("phases")), "phases"),
    (_edit(lambda d: d["predicates"].append({"name": "x", "kind": "teleported"})), "predicates"),
    (_edit(lambda d: d["predicates"].append(dict(d["predicates"][0]))), "repeat"),
    (_edit(lambda d: d["predicates"][1].pop("min_height_m")), "min_height_m"),
    (_edit(lambda d: d["predicates"][3].update(min=[0, 0, 0.1], max=[0, 0, 0.0])), "exceeds max"),
    (_edit(lambda d: d.update(predicates=[p for p in d["predicates"] if p["kind"] != "object_lifted"])),
     "needs an object_lifted predicate"),
    (_edit(lambda d: d["phases"].append({"name": "dance", "event": "dance"})), "phases"),
    (_edit(lambda d: d.update(robot_models=["franka_panda", "hal9000"])), "unknown robot models"),
    (_edit(lambda d: d.update(surprise=True)), "surprise"),
    (_edit(lambda d: d["tolerances"].update(position_m=0)), "position_m"),
])
def test_invalid_schema_files_are_config_errors_naming_the_file(tmp_path, doc, message):
    with pytest.raises(ConfigError) as info:
        load_schema(_write(tmp_path, doc))
    assert message in str(info.value) and "pick_place.v1.yaml" in str(info.value)


def test_file_name_must_match_the_content(tmp_path):
    with pytest.raises(ConfigError, match="name the file pick_place.v1.yaml"):
        load_schema(_write(tmp_path, PICK_PLACE, "pick_place.v2.yaml"))


def test_a_directory_registry_serves_its_own_and_refuses_a_bad_file(tmp_path):
    _write(tmp_path, _edit(lambda d: d.update(task_version="7")), "pick_place.v7.yaml")
    registry = TaskRegistry(tmp_path)
    assert registry.list() == [("pick_place", "7")]
    assert registry.get("pick_place", "7").task_version == "7"
    with pytest.raises(UnknownTask, match="known: pick_place v7"):
        registry.get("pick_place", "1")
    _write(tmp_path, PICK_PLACE, "copy-of-pick_place.yaml")
    with pytest.raises(ConfigError, match="copy-of-pick_place.yaml"):
        TaskRegistry(tmp_path)
