"""One OpenGL platform per process, shared by every offscreen renderer.

PyOpenGL reads ``PYOPENGL_PLATFORM`` once, when it is first imported, and both MuJoCo's
offscreen contexts (``mujoco.egl`` / ``mujoco.osmesa``: the XGen video and quality
renders) and Genesis' renderer (playback, XGen previews) go through it. A process that
let MuJoCo pick EGL and then asked Genesis for OSMesa could not render with Genesis any
more (``gpu_consumers.playback`` refuses: the platform is already settled). So every
renderer asks here: the platform already set in the environment (an operator's choice,
e.g. ``egl`` on GPU nodes), else OSMesa (software: works on every CPU machine, and the
playback renderer's own default for its CPU backend).
"""

from __future__ import annotations

import os

DEFAULT_PLATFORM = "osmesa"


def process_gl_platform(default: str = DEFAULT_PLATFORM) -> str:
    """The process's PyOpenGL platform: the environment's, else ``default`` (then set)."""
    current = os.environ.get("PYOPENGL_PLATFORM")
    if current:
        return current
    os.environ["PYOPENGL_PLATFORM"] = default
    return default


def mujoco_gl_context():
    """MuJoCo's offscreen ``GLContext`` class for the process's platform."""
    if process_gl_platform() == "egl":
        from mujoco.egl import GLContext
    else:
        from mujoco.osmesa import GLContext
    return GLContext
