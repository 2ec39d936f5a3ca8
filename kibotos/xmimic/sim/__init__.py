"""One environment definition, two simulators: MuJoCo (CPU default, CI) and Genesis
(default where CUDA is present). ``make_simulator`` picks the backend."""

from __future__ import annotations

from kibotos.xmimic.sim.base import SimState, Simulator


def resolve_backend(backend: str, device: str) -> str:
    if backend != "auto":
        return backend
    return "genesis" if str(device).startswith("cuda") else "mujoco"


def make_simulator(backend: str, *, num_envs: int, fixed_pelvis: bool, control_dt: float, substeps: int,
                   device: str = "cpu", threads: int = 1, physics=None) -> Simulator:
    """``physics``: config ``sim.physics`` (MuJoCo's solver and contact options; Genesis keeps its own)."""
    backend = resolve_backend(backend, device)
    if backend == "mujoco":
        from kibotos.xmimic.sim.mujoco_sim import MujocoSim

        return MujocoSim(num_envs=num_envs, fixed_pelvis=fixed_pelvis, control_dt=control_dt, substeps=substeps,
                         device=device, threads=threads, physics=physics)
    if backend == "genesis":
        from kibotos.xmimic.sim.genesis_sim import GenesisSim

        return GenesisSim(num_envs=num_envs, fixed_pelvis=fixed_pelvis, control_dt=control_dt, substeps=substeps,
                          device=device)
    raise ValueError(f"unknown simulator backend {backend!r}")


__all__ = ["SimState", "Simulator", "make_simulator", "resolve_backend"]
