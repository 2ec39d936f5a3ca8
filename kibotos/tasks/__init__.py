"""Task schemas (design §9): versioned definitions, their registry, and the task
completion evidence judged against them.

>>> from kibotos.tasks import get_task
>>> get_task("pick_place", "1").robot_models
('franka_panda', 'ur5')
"""

from kibotos.tasks.evaluate import GATE_ID, evaluate_task
from kibotos.tasks.registry import TaskRegistry, UnknownTask, get_task, list_tasks, load_schema
from kibotos.tasks.schema import TaskSchema

__all__ = ["GATE_ID", "TaskRegistry", "TaskSchema", "UnknownTask", "evaluate_task", "get_task", "list_tasks",
           "load_schema"]
