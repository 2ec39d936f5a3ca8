"""One OpenGL platform per process (``kibotos.media.gl``): an XGen MuJoCo render followed by
Genesis in the same process (the export actor renders the quality video, then the
preview) must both work. PyOpenGL's platform is process-global, so each case runs in a
fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]

MUJOCO_THEN_GENESIS = """
import os, sys
from kibotos.xgen.render import render_pickup
from kibotos.xgen.synth import cargo_pickup
frames = render_pickup(cargo_pickup(3.0, 2.0), width=64, height=64)
assert frames.shape[1:] == (64, 64, 3) and frames.any(), frames.shape
from gpu_consumers.playback import _genesis
for _ in range(2):  # the second renderer (a preview, then playback) raised when MuJoCo had settled EGL
    _genesis("cpu", __import__("pathlib").Path(sys.argv[1]), "osmesa")
print("platform", os.environ["PYOPENGL_PLATFORM"])
"""


def _run(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("PYOPENGL_PLATFORM", "MUJOCO_GL")}
    return subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT, env=base | env,
                          capture_output=True, text=True, timeout=300)


def test_an_xgen_render_then_genesis_share_one_platform(tmp_path):
    done = _run(MUJOCO_THEN_GENESIS, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "platform osmesa" in done.stdout


def test_the_platform_an_operator_set_is_kept(tmp_path):
    done = _run("from kibotos.media.gl import mujoco_gl_context, process_gl_platform\n"
                "print(process_gl_platform(), mujoco_gl_context().__module__)", tmp_path, PYOPENGL_PLATFORM="egl")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["egl", "mujoco.egl"]


CONFIGURE = """
import json, os, sys
from kibotos.config.settings import Settings
from kibotos.media.gl import configure_process
settings = Settings(genesis_cache_dir=sys.argv[1], gl_platform=os.environ.get("WANT") or None)
print(json.dumps(configure_process(settings)))
"""


def _genesis_env() -> dict[str, str]:
    """This environment less the variables ``configure_process`` sets."""
    return {k: v for k, v in os.environ.items()
            if k not in ("QD_OFFLINE_CACHE_FILE_PATH", "GS_CACHE_FILE_PATH", "MESA_SHADER_CACHE_DIR")}


def test_a_gpu_actor_takes_the_platform_and_caches_from_its_settings(tmp_path):
    base = _genesis_env()
    done = subprocess.run([sys.executable, "-c", CONFIGURE, str(tmp_path)], cwd=REPO_ROOT,
                          env={k: v for k, v in base.items() if k != "PYOPENGL_PLATFORM"} | {"WANT": "egl"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    env = json.loads(done.stdout)
    assert env["PYOPENGL_PLATFORM"] == "egl"
    assert env["QD_OFFLINE_CACHE_FILE_PATH"] == str(tmp_path / "quadrants")
    assert env["GS_CACHE_FILE_PATH"] == str(tmp_path / "genesis")
    assert env["MESA_SHADER_CACHE_DIR"] == str(tmp_path / "mesa")
    assert (tmp_path / "quadrants").is_dir()


def test_without_a_platform_setting_the_environment_or_osmesa_is_kept_and_operator_caches_win(tmp_path):
    own = tmp_path / "operator-kernels"
    done = subprocess.run([sys.executable, "-c", CONFIGURE, str(tmp_path / "cache")], cwd=REPO_ROOT,
                          env={k: v for k, v in _genesis_env().items() if k != "PYOPENGL_PLATFORM"}
                          | {"WANT": "", "QD_OFFLINE_CACHE_FILE_PATH": str(own)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    env = json.loads(done.stdout)
    assert env["PYOPENGL_PLATFORM"] == "osmesa"
    assert env["QD_OFFLINE_CACHE_FILE_PATH"] == str(own)
    assert env["GS_CACHE_FILE_PATH"] == str(tmp_path / "cache" / "genesis")
