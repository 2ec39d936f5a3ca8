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
import sys
from pathlib import Path

DEFAULT_PLATFORM = "osmesa"


def current_gl_platform() -> str | None:
    """The platform PyOpenGL takes (or took) in this process, None when none is set."""
    return os.environ.get("PYOPENGL_PLATFORM") or None


def default_genesis_cache() -> Path:
    """``$XDG_CACHE_HOME/kibotos/genesis``, else ``~/.cache/kibotos/genesis`` (the default of
    ``Settings.genesis_cache_dir``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kibotos" / "genesis"


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


# Genesis' caches: the environment variable Genesis (or Mesa) reads -> the subfolder of the
# cache root. Compiled kernels (Quadrants' offline cache, written by ``gs.destroy()`` at
# exit), processed assets (convex hulls, watertight meshes), compiled GL shaders.
GENESIS_CACHES = {
    "QD_OFFLINE_CACHE_FILE_PATH": "quadrants",
    "GS_CACHE_FILE_PATH": "genesis",
    "MESA_SHADER_CACHE_DIR": "mesa",
}


def genesis_caches(cache_dir: str | Path) -> dict[str, str]:
    """Point Genesis' kernel, asset and shader caches under ``cache_dir`` (values an
    operator already set win). Only effective before Genesis initializes; returns the
    effective locations."""
    root = Path(cache_dir)
    for name, sub in GENESIS_CACHES.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault(name, str(root / sub))
    return {name: os.environ[name] for name in GENESIS_CACHES}


def configure_process(settings) -> dict[str, str]:
    """Process start of a process that may render (a GPU consumer's Ray actor): the
    variables PyOpenGL and Genesis read from the environment themselves, set once here
    from ``Settings`` (``gl_platform``, ``genesis_cache_dir``) before either is imported;
    no handler reads or writes them. Returns what the process now has."""
    if settings.gl_platform and "OpenGL" not in sys.modules:  # PyOpenGL settles it on import
        os.environ["PYOPENGL_PLATFORM"] = settings.gl_platform
    return {"PYOPENGL_PLATFORM": process_gl_platform(), **genesis_caches(settings.genesis_cache_dir)}
