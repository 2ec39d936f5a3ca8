"""Versioned prompts of the VLM alignment / task evaluation.

Change a prompt's text => bump ``PROMPT_VERSION``: calibration statistics are measured
per ``(model, prompt_version)`` and a new prompt starts uncalibrated. The version is sent
in the system message and the ``X-Kibotos-Prompt-Version`` request header, and stored in
every call record.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kibotos.tasks import TaskSchema
    from kibotos.vlm.providers import KeyframePair

PROMPT_VERSION = "align-v1"

SYSTEM_PROMPT = f"""You are a verification instrument for robot demonstration data (prompt {PROMPT_VERSION}).
You receive keyframe pairs from one episode. In each pair, REAL is a frame of the submitted \
camera video and SIM is the submitted joint trajectory replayed in a simulator at the same \
instant, rendered through the declared camera (a plain background; only the robot is drawn). \
The REAL frame may show the robot differently (another texture, a skeleton drawing, a real \
scene); judge the robot's configuration, not its appearance.

Decide:
- aligned: true when, across the pairs, the SIM robot's pose matches the REAL robot's pose \
at the same instant (the video and the trajectory record the same motion); false otherwise.
- alignment_score: 0 to 1, how well the poses match over all pairs (1 = every pair matches).
- task_success: whether the REAL frames show the task of the task schema completed; null when \
no task schema is given or the frames do not tell.
- phases_observed: the names of the task schema's phases you can see in the REAL frames, in \
the order they happen (an empty list without a task schema).
- confidence: 0 to 1, your confidence in the answer as a whole.
- notes: one or two short sentences of evidence.

Answer with one JSON object and nothing else, exactly these keys:
{{"aligned": bool, "alignment_score": number, "task_success": bool or null, \
"phases_observed": [string], "confidence": number, "notes": string}}
Never guess: when the frames do not show something, say so with a lower confidence."""


def task_description(task: "TaskSchema | None") -> dict[str, Any] | None:
    """The parts of a task schema the VLM judges: phases (ordered) and success predicates."""
    if task is None:
        return None
    return {
        "task_id": task.task_id,
        "task_version": task.task_version,
        "title": task.title,
        "description": task.description,
        "phases": [{"name": p.name, "event": p.event} for p in task.phases],
        "predicates": [{"name": p.name, "kind": p.kind} for p in task.predicates],
    }


def _image_part(png: bytes) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}


def build_messages(pairs: Sequence["KeyframePair"], task: "TaskSchema | None", robot: str) -> list[dict[str, Any]]:
    """OpenAI chat messages: the system prompt, then one user message with the robot, the
    task schema (JSON) and every pair as text labels + base64 PNG ``image_url`` parts."""
    schema = task_description(task)
    intro = (f"Robot model: {robot}.\n"
             + (f"Task schema (JSON): {json.dumps(schema, sort_keys=True)}\n" if schema
                else "No task schema is declared: task_success must be null and phases_observed empty.\n")
             + f"{len(pairs)} keyframe pairs follow, in time order.")
    content: list[dict[str, Any]] = [{"type": "text", "text": intro}]
    for k, pair in enumerate(pairs, start=1):
        label = f"Pair {k} (video frame {pair.frame}, trajectory time {pair.kin_time_ms:.0f} ms)"
        content += [{"type": "text", "text": f"{label}: REAL"}, _image_part(pair.real_png),
                    {"type": "text", "text": f"{label}: SIM"}, _image_part(pair.sim_png)]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]
