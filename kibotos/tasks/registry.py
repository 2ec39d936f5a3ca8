"""The task registry: schemas loaded from ``kibotos/tasks/schemas/*.yaml``.

Each file is named ``<task_id>.v<task_version>.yaml`` and holds one ``TaskSchema``; a
file whose name disagrees with its content (so no key is defined twice), a schema naming
an unregistered robot model or an invalid document is a ``ConfigError`` naming the file.
``get_task`` answers ``UnknownTask`` listing the known tasks.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml
from pydantic import ValidationError

from kibotos.errors import ConfigError, KibotosError
from kibotos.robots import list_robots
from kibotos.tasks.schema import TaskSchema

SCHEMA_DIR = Path(__file__).parent / "schemas"


class UnknownTask(KibotosError):
    reason_code = "unknown_task"


def _check_robots(schema: TaskSchema, path: Path) -> None:
    known = list_robots()
    models = {m for m, _ in known} | {f"{m}@{r}" for m, r in known}
    unknown = [m for m in schema.robot_models if m not in models]
    if unknown:
        raise ConfigError(f"{path.name}: unknown robot models {unknown}; known: {sorted(models)}")


def load_schema(path: Path) -> TaskSchema:
    """One schema file, validated (see the module docstring for what is refused)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read task schema {path.name}: {exc}") from exc
    try:
        schema = TaskSchema.model_validate(raw)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(f"invalid task schema {path.name}: {detail}") from exc
    expected = f"{schema.task_id}.v{schema.task_version}.yaml"
    if path.name != expected:
        raise ConfigError(f"task schema {path.name} declares {schema.task_id} v{schema.task_version}: "
                          f"name the file {expected}")
    _check_robots(schema, path)
    return schema


class TaskRegistry:
    """Every schema of one directory, keyed by ``(task_id, task_version)``."""

    def __init__(self, directory: Path = SCHEMA_DIR):
        self.directory = Path(directory)
        self._schemas: dict[tuple[str, str], TaskSchema] = {}
        for path in sorted(self.directory.glob("*.yaml")):
            schema = load_schema(path)  # its file name is its key: no key twice
            self._schemas[schema.key] = schema

    def list(self) -> list[tuple[str, str]]:
        return sorted(self._schemas)

    def get(self, task_id: str, task_version: str) -> TaskSchema:
        schema = self._schemas.get((task_id, str(task_version)))
        if schema is None:
            known = ", ".join(f"{t} v{v}" for t, v in self.list()) or "none"
            raise UnknownTask(f"unknown task {task_id} v{task_version}; known: {known}")
        return schema


@functools.lru_cache(maxsize=1)
def default_registry() -> TaskRegistry:
    return TaskRegistry(SCHEMA_DIR)


def list_tasks() -> list[tuple[str, str]]:
    """Every packaged ``(task_id, task_version)``, sorted."""
    return default_registry().list()


def get_task(task_id: str, task_version: str) -> TaskSchema:
    """The packaged schema, or ``UnknownTask`` naming the known ones."""
    return default_registry().get(task_id, task_version)
