"""IK residual (design §5.3; GPU consumer ``ik``): is the submitted trajectory consistent
with an end-effector path that does not come from the submitted joints?

**The target must be independent.** ``T*_t``, the desired pose of an end-effector link,
is built only from evidence other than the joint stream, and ``target_source`` records
which:

1. ``object_grasp`` (preferred) — an object pose stream ``objects/<name>/{timestamps_ms
   (T,), pose (T, 7) x,y,z,qw,qx,qy,qz}`` (robot base frame, kinematic clock) whose
   ``pose`` array declares ``grasp: {link, offset}`` in its attributes: ``offset`` is the
   pose of ``link`` in the object frame, so ``T*_t = object_t ∘ offset`` on grasped
   frames. Grasped frames come from ``contacts/<link>`` (uint8, on the object's or the
   kinematics' timestamps), else are inferred from object motion (the object moves only
   while held). Without a declared offset an object gives no target: fitting the
   offset to the joints would let a constant error vanish into it.
2. ``task_waypoints`` — ``manifest.task.waypoints: [{t_ms, link, pose[7]}, ...]``.
3. A pose-estimated wrist path lifted through the camera is a planned extension: it
   needs a human pose track (gate F) and a person-to-robot scale, neither of which the
   robot-video bundles here carry.

With no independent target the stage passes with ``{"applicable": false}`` and the flag
``ik_no_independent_target`` — it never derives a target from the joints.

**Metrics.** The submitted joints' forward kinematics against ``T*``: ``rms_pos_error_m``,
``peak_pos_error_m`` and orientation error (mean, p95, max, fraction above 30°). The IK
solve's own residual (``ik_feasibility``: how closely any joint trajectory within the
limits reaches ``T*``) and the joint-space distance between that solution and the
submitted joints (informative only: a redundant arm reaches one pose many ways).

**The solver never sees the submitted joints.** It starts from the robot's home pose on
the first target frame (random configurations within the limits only when home does not
reach it), then solves every target frame at once from that batch initial guess — damped
least squares (Levenberg–Marquardt per frame, adaptive damping), joint limits by projection
(clamping), smoothness by a penalty coupling neighbouring frames; each stops once converged
(``converged_residual_m``, ``convergence_tolerance``, ``converged_change_m``: see
``IKSolver._lm``). Seeding from the submitted joints
would make the solution, its residual and the joint distance partly a copy of what is
being judged: a local solver started there stays there.

**Verdict.** Hard reject only when clearly infeasible: RMS > 8 cm (``ik_rms_exceeded``),
peak > 12 cm (``ik_peak_exceeded``), orientation > 30° on > 15 % of frames
(``ik_orientation_exceeded``) — reported as ``ik_target_infeasible`` instead when the IK
solution within the limits misses ``T*`` by as much (then no joint trajectory of this
robot could follow the target: the target or the robot is wrong, not the retargeting).
Everything else yields ``s_retarget = s_pos · s_rot`` with
``s_pos = 1 / (1 + (rms / confidence_scale_pos_m)^2)`` and
``s_rot = 1 / (1 + (mean_deg / confidence_scale_rot_deg)^2)``. A target that agrees with
the joints to within ``exact_match_floor_m`` (0.5 mm RMS, below any real tracking noise)
cannot be an independent measurement: flag ``ik_target_matches_joints``, ``s_retarget``
capped at the neutral 0.5.

**Trajectory quality** (``trajectory``, reported whether or not a target exists): the
smoothness and joint-limit margins of the submitted joints of the retargeted chains (base
to every end-effector link; all joints for a robot without one), the other two inputs of
the scoring component ``S_retarget`` (``kibotos.scoring``): ``jerk_ratio`` — per frame
the largest ``|jerk| / bound`` over those joints (gate E's local fit on the real timestamps
over gate E's window, gate E's bounds; raw, sensor noise included: the noise gate E
tolerates lowers the smoothness term instead), its p50 / p95 / max — and ``limit_margin_fraction`` — per frame the
smallest distance to a position limit as a fraction of that joint's span, its min / p5.
They are measurements, not verdicts: gates D and E judge the limits and bounds.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pytorch_kinematics.transforms import matrix_to_axis_angle

from gpu_consumers.registry import EVIDENCE_GATES
from kibotos.bundle.reader import JOINT_POS, TIMESTAMPS, BundleView
from kibotos.config.gates import GateConfig, IKConfig
from kibotos.errors import BundleError, ConfigError
from kibotos.media.poses import pose7_to_matrix, rotation_angle_deg
from kibotos.reports.model import GateResult
from kibotos.robots import RobotModel
from kibotos.robots.kinematics import SerialChainNumpy, SerialKinematics
from processors.base import result
from processors.derivatives import local_derivatives, window_samples

GATE_ID = EVIDENCE_GATES["ik"]


# --- the solver --------------------------------------------------------------------------

@dataclass(frozen=True)
class IKSolution:
    """Joint trajectory of one chain (``joint_names``) reaching a target path, and its residual."""

    link: str
    joint_names: tuple[str, ...]
    joint_index: np.ndarray  # chain joints in robot.joint_names
    q: np.ndarray  # (N, n)
    pos_error_m: np.ndarray  # (N,)
    rot_error_deg: np.ndarray  # (N,)
    seed_pos_error_m: float  # multi-start result on the first frame
    iterations: int  # seed + batch iterations run (each stops early once nothing moves)
    wall_ms: float


@contextlib.contextmanager
def _torch_threads(n: int | None):
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class IKSolver:
    """Batched IK for one robot, built once and kept warm (a Ray actor holds it).

    Chains (one per end-effector link) are built on first use and cached. A solve keeps
    no state between calls — the same target gives the same solution whatever was solved
    before — so verdicts do not depend on the order submissions arrive in.

    The solve's loop runs in NumPy float64 on the host (``SerialKinematics.numpy``) whatever
    ``device``: its arrays are a few hundred 4x4 and 6xn matrices, where the cost is per
    operation (a GPU's kernel launches as much as a CPU's torch dispatch); ``device`` and
    ``dtype`` are the torch chains' (the pose-derived target's forward kinematics).

    ``num_threads``: torch intra-op threads during a solve (the batched 7x7 solve, ``sin``/
    ``cos``). On such small arrays thread hand-off costs more than it saves: one thread is
    ~10x faster than two on a 2-core CPU (measured). ``None`` leaves torch's setting.
    """

    def __init__(self, robot: RobotModel, *, device: str = "cpu", dtype=torch.float64, num_threads: int | None = 1):
        self.robot = robot
        self.device = device
        self.dtype = dtype
        self.num_threads = num_threads
        self._chains: dict[str, SerialKinematics] = {}

    def chain(self, link: str) -> SerialKinematics:
        if link not in self._chains:
            self._chains[link] = SerialKinematics(self.robot, link, device=self.device, dtype=self.dtype)
        return self._chains[link]

    def _error(self, chain: SerialChainNumpy, q: np.ndarray, p_t: np.ndarray, r_tt: np.ndarray, w: float):
        """Residual ``(B, 6)`` (position, then ``w`` times the rotation vector of ``R* R^T``,
        in the base frame) and the transposed Jacobian ``J^T (B, n, 6)`` with the same weights
        (the normal equations read it as is). ``r_tt``: the targets' rotations transposed,
        ``R*^T`` (``R R*^T`` is ``(R* R^T)^T``, the same products without a transposed operand,
        half the time of the matrix product). ``q`` may be one row for ``B`` targets."""
        rot, pos, jt = chain.rot_pos(q, True)
        e = np.empty((max(len(q), len(p_t)), 6))
        np.subtract(p_t, pos, out=e[:, :3])
        e[:, 3:] = _rotation_vector(rot @ r_tt, w, transposed=True)
        jt[:, :, 3:] *= w
        return e, jt

    def _lm(self, chain: SerialChainNumpy, q, p_t, r_tt, cfg: IKConfig, smooth: bool, *, reach_m: float | None = None,
            start: tuple[np.ndarray, np.ndarray] | None = None, iterations: int | None = None):
        """Levenberg–Marquardt on every row of ``q`` at once; with ``smooth`` the rows are
        consecutive frames coupled by ``smoothness_weight * sum ||q_t - q_{t-1}||^2``.

        Independent rows (the multi-start) stop one by one, each once converged: its residual
        is below ``converged_residual_m``, or its next step (taken or refused) changes its
        position and orientation terms and its cost by less than ``convergence_tolerance`` of
        them, or the step it asks for is below 1e-9 rad (a constrained minimum: every step is
        clamped away); with ``reach_m`` the loop ends as soon as any row is within ``reach_m``
        of its target. Coupled frames (``smooth``: a frame's optimum moves with its
        neighbours, so none is frozen while another still moves) stop together once no term
        of the episode's objective (position, orientation, smoothness; each summed afresh over
        the frames) changes in an iteration by more than ``convergence_tolerance`` of it or,
        as an RMS over the frames, by more than ``converged_change_m``, or its changes shrink
        geometrically (at least halving) with a tail still to come below ``converged_change_m``
        (no iteration is spent only to confirm it) — per term, so that a
        position miss of metres (a target out of reach) does not hide the orientation still
        improving. At most ``iterations`` (``cfg.iterations`` when None). ``start``: the
        residual and ``J^T`` at ``q``, when the caller has them. Returns ``(q, residual (B, 6), iterations run)``.

        Per iteration one forward kinematics + Jacobian pass and a few dozen array
        operations, in NumPy float64: on a CPU their number, not their size, is the cost
        (README "The IK solver's own loop"), and a NumPy operation on these arrays costs a
        fraction of a torch one; hence also the sums shared between the step, the cost and
        the stopping test. The batched 7x7 solve is torch's (faster than NumPy's here), on
        the same memory."""
        w, tol, floor = cfg.rotation_weight_m_per_rad, cfg.convergence_tolerance, cfg.converged_residual_m**2
        beta = cfg.smoothness_weight if smooth else 0.0
        n_rows, n = q.shape
        step = cfg.max_step_rad
        lam = np.full(n_rows, cfg.damping * 100)
        e, jt = start if start is not None else self._error(chain, q, p_t, r_tt, w)
        parts = _terms(e)  # (B, 2): position and orientation terms per row
        if smooth:
            count = np.full(n_rows, 2.0)
            count[0] = count[-1] = 1.0
            diag_extra = beta * count  # the smoothness term's share of the normal matrix' diagonal
            d = q[1:] - q[:-1]
            g = _smoothness_gradient(d, beta)
            # a row's cost: its residual and its share of the smoothness term, q_t . g_t
            current = parts[:, 0] + parts[:, 1] + np.einsum("ij,ij->i", q, g)
            total = _episode_terms(parts, d, beta)
            change_sq = cfg.converged_change_m**2 * n_rows  # RMS change -> change of sqrt(sum)
            last_moved = np.zeros(3)
        else:
            current = parts[:, 0] + parts[:, 1]
            active = np.ones(n_rows, dtype=bool)
        done = 0
        for done in range(1, (cfg.iterations if iterations is None else iterations) + 1):  # noqa: B007 (read after)
            j = np.ascontiguousarray(jt.transpose(0, 2, 1))  # NumPy's fast product wants both operands contiguous
            a = jt @ j
            a.reshape(n_rows, n * n)[:, ::n + 1] += (lam + diag_extra if smooth else lam)[:, None]
            b = (e[:, None, :] @ j)[:, 0, :]
            if smooth:
                b -= g
            dq = _solve_batched(a, b)
            cand = np.maximum(np.minimum(dq, step, out=dq), -step, out=dq)  # the step within max_step_rad ...
            cand += q
            np.minimum(np.maximum(cand, chain.lower, out=cand), chain.upper, out=cand)  # ... the joints within limits
            e_c, jt_c = self._error(chain, cand, p_t, r_tt, w)
            parts_c = _terms(e_c)
            new = parts_c[:, 0] + parts_c[:, 1]
            if smooth:
                d_c = cand[1:] - cand[:-1]
                g_c = _smoothness_gradient(d_c, beta)
                new += np.einsum("ij,ij->i", cand, g_c)
            better = new < current
            if not smooth:
                # converged: the residual at the floor, or a step (taken or refused) that changes
                # the cost and each of its terms by less than the tolerance, or nothing left to move
                better &= active
                small = (np.abs(parts_c - parts) <= tol * parts + floor).all(1)
                settled = (new <= floor) | (current <= floor) | (small & (np.abs(current - new) <= tol * current))
                active &= ~(settled | (np.abs(cand - q).max(1) < 1e-9))
            if smooth and better.all():
                # every frame took its step (the usual case): no selection to make
                q, e, jt, parts, current, d, g = cand, e_c, jt_c, parts_c, new, d_c, g_c
                lam = np.maximum(lam / 3.0, 1e-9)
            else:
                q = np.where(better[:, None], cand, q)
                e = np.where(better[:, None], e_c, e)
                jt = np.where(better[:, None, None], jt_c, jt)
                parts = np.where(better[:, None], parts_c, parts)
                current = np.where(better, new, current)
                lam = np.minimum(np.maximum(np.where(better, lam / 3.0, lam * 4.0), 1e-9), 1e6)
                if not smooth:
                    if reach_m is not None and (current <= reach_m**2).any():
                        break
                    if not active.any():
                        break
                    continue
                d = q[1:] - q[:-1]
                g = _smoothness_gradient(d, beta)
            parts_now = _episode_terms(parts, d, beta)
            moved, rms_moved = np.abs(parts_now - total), np.abs(np.sqrt(parts_now) - np.sqrt(total))
            # the change still to come where a term shrinks geometrically (at least halving each
            # iteration): rms_moved * rate / (1 - rate), the tail of the series
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = rms_moved / last_moved
                tail = rms_moved * rate / (1.0 - rate)
                if ((moved <= tol * total + floor) | (rms_moved**2 <= change_sq)
                        | ((rate <= 0.5) & (tail**2 <= change_sq))).all():
                    break
            total, last_moved = parts_now, rms_moved
        return q, e, done

    def solve(self, link: str, targets: np.ndarray, cfg: IKConfig, *, seed: int = 0) -> IKSolution:
        """Joint trajectory for ``link`` to follow ``targets`` (N, 4, 4) in the base frame.

        The first frame from home alone (at most ``home_iterations``); when home does not
        come within ``seed_residual_m`` of it, a multi-start (home + ``seed_restarts - 1``
        uniform draws within the limits, generator ``seed``): the first start within
        ``seed_residual_m`` (home before the draws on a tie), else the closest. That
        configuration seeds every frame at once (a warm start: each frame begins where the first frame's solve ended,
        and the smoothness coupling carries each frame's progress to its neighbours; the
        batch refines the first frame as well, so the seed need not be exact). The batch's
        first residual and Jacobian are those of that one configuration, computed once."""
        t0 = time.perf_counter()
        chain = self.chain(link).numpy
        w = cfg.rotation_weight_m_per_rad
        with _torch_threads(self.num_threads):
            tgt = np.asarray(targets, dtype=np.float64)
            p_t, r_tt = np.ascontiguousarray(tgt[:, :3, 3]), np.ascontiguousarray(tgt[:, :3, :3].transpose(0, 2, 1))
            home = np.asarray(self.robot.home_qpos, dtype=np.float64)[chain.joint_index]
            # home alone first: it reaches most first targets, and a lone row costs a fraction
            # of the restarts' iterations (near-180-degree errors of random starts included)
            first, e0, it_seed = self._lm(chain, home[None].copy(), p_t[:1], r_tt[:1],
                                          cfg, smooth=False, reach_m=cfg.seed_residual_m,
                                          iterations=cfg.home_iterations)
            if float((e0**2).sum()) > cfg.seed_residual_m**2 and cfg.seed_restarts > 1:
                gen = torch.Generator(device="cpu").manual_seed(seed)
                draws = torch.rand((cfg.seed_restarts - 1, chain.dof), generator=gen, dtype=torch.float64).numpy()
                starts = np.concatenate([home[None], chain.lower + draws * (chain.upper - chain.lower)])
                k = len(starts)
                first, e0, it_more = self._lm(chain, starts, np.broadcast_to(p_t[:1], (k, 3)),
                                              np.broadcast_to(r_tt[:1], (k, 3, 3)), cfg, smooth=False,
                                              reach_m=cfg.seed_residual_m)
                it_seed += it_more
            # the first start within reach (home before the draws on a tie); the closest when none is
            reached = np.flatnonzero((e0**2).sum(1) <= cfg.seed_residual_m**2)
            best = int(reached[0]) if len(reached) else int(np.argmin((e0**2).sum(1)))
            q0 = first[best:best + 1]
            e_start, jt_start = self._error(chain, q0, p_t, r_tt, w)
            q, e, it_batch = self._lm(chain, np.repeat(q0, len(tgt), axis=0), p_t, r_tt, cfg, smooth=True,
                                      start=(e_start, np.broadcast_to(jt_start, (len(tgt),) + jt_start.shape[1:])))
            # the residual the solver already has: no forward kinematics pass after the solve
            pos_err = np.sqrt((e[:, :3] ** 2).sum(1))
            rot_err = np.degrees(np.sqrt((e[:, 3:] ** 2).sum(1)) / w)
        return IKSolution(
            link=link, joint_names=chain.joint_names, joint_index=chain.joint_index, q=q,
            pos_error_m=pos_err, rot_error_deg=rot_err,
            seed_pos_error_m=float(np.linalg.norm(e0[best, :3])), iterations=it_seed + it_batch,
            wall_ms=(time.perf_counter() - t0) * 1000.0)


def _solve_batched(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched ``a x = b`` ((B, n, n), (B, n)): by torch on the same memory for many rows
    (its batched LU is faster than NumPy's on a few hundred 7x7 systems: ~85 vs ~115 µs),
    by NumPy for a few (a lone row: ~5 vs ~15 µs)."""
    if len(a) >= 32:  # without the singularity check: the damping keeps every system positive definite
        return torch.linalg.solve_ex(torch.from_numpy(a), torch.from_numpy(b))[0].numpy()
    return np.linalg.solve(a, b[:, :, None])[:, :, 0]


def _terms(e: np.ndarray) -> np.ndarray:
    """(B, 2): each row's position and (weighted) orientation terms ``||e_pos||^2``, ``||e_rot||^2``
    (column adds: a reduction over 3 columns costs several times as much)."""
    sq = e * e
    return sq[:, 0::3] + sq[:, 1::3] + sq[:, 2::3]


def _episode_terms(parts: np.ndarray, d: np.ndarray, beta: float) -> np.ndarray:
    """(3,): the episode's position, orientation and smoothness terms."""
    out = np.empty(3)
    out[:2] = parts.sum(0)
    out[2] = beta * np.vdot(d, d)
    return out


def _smoothness_gradient(d: np.ndarray, beta: float) -> np.ndarray:
    """``beta * (count_t q_t - q_{t-1} - q_{t+1})`` (half the gradient of ``beta * sum ||d||^2``)
    from the frame differences ``d = q[1:] - q[:-1]``: ``d_{t-1} - d_t``, zero beyond the ends."""
    g = np.empty((d.shape[0] + 1, d.shape[1]))
    g[0] = 0.0
    g[1:] = d
    g[:-1] -= d
    g *= beta
    return g


def _rotation_vector(r: np.ndarray, scale: float = 1.0, transposed: bool = False) -> np.ndarray:
    """Log map of rotation matrices (B, 3, 3) -> rotation vectors (B, 3) times ``scale``:
    ``angle * axis`` from the trace and the skew part (a dozen array operations where
    pytorch-kinematics' ``matrix_to_axis_angle`` goes through quaternions in ~40). Near 180
    degrees the skew part vanishes and loses the axis: there pytorch-kinematics' conversion is
    used. ``transposed``: ``r`` holds the transposes (the entries are read transposed)."""
    # r21 r02 r10 | r12 r20 r01 | r00 r11 r22
    flat = r.reshape(r.shape[0], 9)[:, _LOG_INDEX_T if transposed else _LOG_INDEX]
    v = flat[:, :3] - flat[:, 3:6]  # 2 sin(angle) axis
    cos = (flat[:, 6] + flat[:, 7] + flat[:, 8] - 1.0) * 0.5
    if (cos < -0.99).any():
        r = r.transpose(0, 2, 1) if transposed else r
        return matrix_to_axis_angle(torch.from_numpy(np.ascontiguousarray(r))).numpy() * scale
    sin2 = np.sqrt(np.einsum("ij,ij->i", v, v))
    angle = np.arctan2(sin2 * 0.5, cos)
    v *= (angle * scale / np.maximum(sin2, 1e-300))[:, None]
    return v


_LOG_INDEX = np.array([7, 2, 3, 5, 6, 1, 0, 4, 8])
_LOG_INDEX_T = np.array([5, 6, 1, 7, 2, 3, 0, 4, 8])  # the same entries of the transpose


# --- independent targets -----------------------------------------------------------------

class _Grasp(BaseModel):
    model_config = ConfigDict(extra="ignore")
    link: str
    offset: list[float] = Field(min_length=7, max_length=7)


class _Waypoint(BaseModel):
    model_config = ConfigDict(extra="ignore")
    t_ms: float
    link: str
    pose: list[float] = Field(min_length=7, max_length=7)


@dataclass
class Target:
    """A desired pose path for one link, at kinematic times ``t_ms``."""

    source: str  # "objects/<name>" or "task.waypoints"
    link: str
    t_ms: np.ndarray  # (N,)
    pose: np.ndarray  # (N, 4, 4)
    details: dict = field(default_factory=dict)


def _valid_quaternions(pose: np.ndarray) -> bool:
    norms = np.linalg.norm(pose[:, 3:], axis=1)
    return bool(np.all(np.isfinite(pose)) and np.all(norms > 0.5) and np.all(norms < 2.0))


def _smoothed_speed(t_ms: np.ndarray, pos: np.ndarray, window_ms: float) -> np.ndarray:
    """Object speed (m/s) from positions smoothed by a moving average over ``window_ms``."""
    dt = float(np.median(np.diff(t_ms)))
    k = max(1, int(round(window_ms / max(dt, 1e-6))))
    if k > 1:
        pad = np.pad(pos, ((k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
        kernel = np.ones(k) / k
        pos = np.stack([np.convolve(pad[:, i], kernel, mode="valid") for i in range(3)], axis=1)
    return np.linalg.norm(np.gradient(pos, t_ms / 1000.0, axis=0), axis=1)


def _grasped_frames(view: BundleView, link: str, obj_t: np.ndarray, kin_t: np.ndarray, pos: np.ndarray,
                    cfg: IKConfig) -> tuple[np.ndarray, str]:
    path = f"contacts/{link}"
    if view.has(path):
        c = view.read(path)
        if c.ndim == 1 and (np.issubdtype(c.dtype, np.number) or c.dtype == bool):
            if c.shape[0] == obj_t.shape[0]:
                return c.astype(bool), "contacts_on_object_timestamps"
            if c.shape[0] == kin_t.shape[0]:
                after = np.clip(np.searchsorted(kin_t, obj_t), 1, len(kin_t) - 1)
                nearest = np.where(obj_t - kin_t[after - 1] <= kin_t[after] - obj_t, after - 1, after)
                return c.astype(bool)[nearest], "contacts_on_kinematics_timestamps"
        how = f"object_motion ({path} {list(c.shape)} {c.dtype} fits neither timestamps)"
    else:
        how = "object_motion"
    moving = _smoothed_speed(obj_t, pos, cfg.grasp_smoothing_ms) > cfg.grasp_speed_m_s
    # the smoothing spreads motion half a window into the rest frames around it, where the
    # hand is still approaching or already leaving: erode the mask by as much
    half = int(round(cfg.grasp_smoothing_ms / 2 / max(float(np.median(np.diff(obj_t))), 1e-6)))
    if half > 0 and moving.any():
        padded = np.pad(moving, half, constant_values=False)
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
        moving = cast(np.ndarray, windows.all(axis=1))
    return moving, how


def _object_names(view: BundleView) -> list[str]:
    names = set()
    for info in view.arrays():
        parts = info.path.split("/")
        if len(parts) == 3 and parts[0] == "objects" and parts[2] == "pose":
            names.add(parts[1])
    return sorted(names)


def rides_with_link(link_pose: np.ndarray, obj_pose: np.ndarray, cfg: IKConfig) -> dict | None:
    """Is an object stream the link's own path plus a constant offset (made from the joints)?

    A real object rests while the hand approaches it and after it lets go, so its pose in
    the link frame changes by the hand's travel; only while grasped is it rigid there. A
    stream whose pose in the link frame stays within ``derived_max_spread_m`` (p95 distance
    from the median) on every frame inside the kinematics while the link travels at least
    ``derived_min_link_travel_m`` follows the joints everywhere: it cannot be told from
    ``FK(joints) ∘ offset`` plus noise, so it is no independent target. ``link_pose`` and
    ``obj_pose`` (N, 4, 4) are on the same frames. Returns the evidence, or None."""
    link_pos = link_pose[:, :3, 3]
    travel = float(np.percentile(np.linalg.norm(link_pos - np.median(link_pos, axis=0), axis=1), 95))
    if len(obj_pose) < 2 or travel < cfg.derived_min_link_travel_m:
        return None
    rel = np.einsum("nji,nj->ni", link_pose[:, :3, :3], obj_pose[:, :3, 3] - link_pos)  # object in the link frame
    spread = float(np.percentile(np.linalg.norm(rel - np.median(rel, axis=0), axis=1), 95))
    if spread > cfg.derived_max_spread_m:
        return None
    return {"link_travel_m": round(travel, 4), "object_in_link_spread_m": round(spread, 5),
            "max_spread_m": cfg.derived_max_spread_m}


def object_targets(view: BundleView, robot: RobotModel, kin_t: np.ndarray, cfg: IKConfig,
                   chain_ok, link_poses=None) -> tuple[list[Target], list[dict]]:
    """Targets from grasped objects, and notes on every object stream that gave none.

    ``link_poses(link, t_ms) -> (N, 4, 4)``: forward kinematics of the submitted joints at
    kinematic times, used only to refuse a stream that rides with the link on every frame
    (``rides_with_link``; note ``derived_from_joints``) — never to build a target."""
    targets, notes = [], []
    for name in _object_names(view):
        base = f"objects/{name}"
        note: dict[str, Any] = {"source": base}
        grasp_raw = view.node_attrs(f"{base}/pose").get("grasp")
        if grasp_raw is None:
            notes.append(note | {"unused": "no grasp declared (pose attribute 'grasp: {link, offset}')"})
            continue
        try:
            grasp = _Grasp.model_validate(grasp_raw)
        except ValidationError as exc:
            notes.append(note | {"unused": f"invalid grasp: {exc.errors()[0]['msg']}"})
            continue
        if not chain_ok(grasp.link):
            notes.append(note | {"unused": f"grasp link {grasp.link!r} is not a link of {robot.model_id}"})
            continue
        if not view.has(f"{base}/timestamps_ms"):
            notes.append(note | {"unused": "no timestamps_ms"})
            continue
        t = view.read(f"{base}/timestamps_ms").astype(np.float64)
        pose = view.read(f"{base}/pose").astype(np.float64)
        if t.ndim != 1 or pose.shape != (t.shape[0], 7) or t.shape[0] < 2:
            notes.append(note | {"unused": f"shapes {list(t.shape)} / {list(pose.shape)}, expected (T,) / (T, 7)"})
            continue
        if not (np.all(np.diff(t) > 0) and np.all(np.isfinite(t)) and _valid_quaternions(pose)):
            notes.append(note | {"unused": "timestamps not increasing or poses not finite unit quaternions"})
            continue
        offset = np.asarray(grasp.offset, dtype=np.float64)
        if not _valid_quaternions(offset[None]):
            notes.append(note | {"unused": "grasp offset is not a finite unit quaternion pose"})
            continue
        inside = (t >= kin_t[0]) & (t <= kin_t[-1])
        obj = pose7_to_matrix(pose)  # once: the independence check and the target both read it
        if link_poses is not None and inside.sum() >= 2:
            derived = rides_with_link(link_poses(grasp.link, t[inside]), obj[inside], cfg)
            if derived is not None:
                notes.append(note | {"unused": f"rides with {grasp.link} on every frame: made from the joints, "
                                               "not an independent measurement", "derived_from_joints": derived})
                continue
        grasped, how = _grasped_frames(view, grasp.link, t, kin_t, pose[:, :3], cfg)
        use = grasped & inside
        if not use.any():
            notes.append(note | {"unused": f"no grasped frame within the kinematics ({how})"})
            continue
        world = obj[use] @ pose7_to_matrix(offset)
        targets.append(Target(base, grasp.link, t[use], world,
                              {"grasp_frames_from": how, "grasped_frames": int(use.sum()), "object_frames": int(len(t))}))
    return targets, notes


def waypoint_targets(view: BundleView, kin_t: np.ndarray, chain_ok) -> tuple[list[Target], list[dict]]:
    task = view.manifest_raw.get("task")
    raw = task.get("waypoints") if isinstance(task, dict) else None
    if not raw:
        return [], []
    try:
        wps = [_Waypoint.model_validate(w) for w in raw]
    except (ValidationError, TypeError) as exc:
        return [], [{"source": "task.waypoints", "unused": f"invalid waypoints: {str(exc)[:200]}"}]
    targets, notes = [], []
    for link in sorted({w.link for w in wps}):
        if not chain_ok(link):
            notes.append({"source": "task.waypoints", "unused": f"link {link!r} is not a link of the robot"})
            continue
        sel = sorted((w for w in wps if w.link == link and kin_t[0] <= w.t_ms <= kin_t[-1]), key=lambda w: w.t_ms)
        poses = np.array([w.pose for w in sel], dtype=np.float64).reshape(-1, 7)
        if not sel or not _valid_quaternions(poses):
            notes.append({"source": "task.waypoints", "unused": f"no usable waypoint for {link!r}"})
            continue
        targets.append(Target("task.waypoints", link, np.array([w.t_ms for w in sel]), pose7_to_matrix(poses),
                              {"waypoints": len(sel)}))
    return targets, notes


# --- option 2: the end-effector path the pose estimator sees -----------------------------

HAND_KEYPOINTS = ("left_wrist", "right_wrist")


def fit_hand_to_end_effector(hand_px: np.ndarray, ee_px: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``ee ≈ a * hand + c`` by least squares with one scale ``a >= 0`` and an offset ``c``
    (the person-to-robot scale and where each stands are unknown; the direction of every
    move is not): ``(a, c, residual_px (N,))``. A hand that does not move, or moves against
    the end effector, gets ``a = 0``: the residual is then the end effector's whole path."""
    h = hand_px - hand_px.mean(axis=0)
    e = ee_px - ee_px.mean(axis=0)
    var = float((h**2).sum())
    a = max(0.0, float((h * e).sum()) / var) if var > 1e-9 else 0.0
    c = ee_px.mean(axis=0) - a * hand_px.mean(axis=0)
    return a, c, np.linalg.norm(ee_px - (a * hand_px + c), axis=1)


def pose_target(view: BundleView, config: GateConfig, robot: RobotModel, kin_t: np.ndarray, q_sub: np.ndarray,
                solver: IKSolver, estimator) -> tuple[dict | None, dict | None]:
    """Design §5.3 option 2 — the end-effector path derived from pose estimation, for a
    video of a human demonstrator: ``(metrics, None)`` or ``(None, note)`` when it gives
    no target.

    The estimator's wrist (the more confidently seen of the two, on sampled frames where
    its confidence is at least gate F's ``frame_confidence``) is the demonstrator's hand.
    The submitted joints' end effector is drawn through the declared camera at the same
    instants (video time to kinematic time by the claimed sync offset, which gate C has
    held to its estimate) and related to the hand by one scale and one offset
    (``fit_hand_to_end_effector``): a retargeted trajectory follows the hand's path up to
    the person-to-robot scale. The per-frame residual, in pixels, becomes metres at the end
    effector's depth (``residual_px * z / fx``): an error across the line of sight; depth is
    unobservable in one view, and so is orientation. With two end effectors the one the
    hand explains better is judged (a choice between two, not a fit)."""
    from gpu_consumers.gate_f_pose import sample_indices, sampled_rgb_chunks
    from gpu_consumers.pose import concat_tracks
    from kibotos.media.camera import project_points

    m = view.manifest
    cfg_f, cfg = config.gate_f, config.for_robot(*robot.key).ik
    if m.video["primary"].subject != "human":
        return None, {"source": "pose_estimate", "unused": "the video shows the robot, not a demonstrator"}
    if estimator is None:
        return None, {"source": "pose_estimate", "unused": "no pose estimator"}
    video = m.video["primary"]
    stride, _ = sample_indices(video.frame_count, video.fps, cfg_f)
    pieces, indices, size = [], [], None
    for frames, idx, size in sampled_rgb_chunks(view, stride, cfg_f.max_decode_side):  # noqa: B007 (size: the last chunk's)
        pieces.append(estimator.estimate(frames))
        indices.append(idx)
    if not pieces:
        return None, {"source": "pose_estimate", "unused": "no decodable video frame"}
    track = concat_tracks(pieces)
    frame_idx = np.concatenate(indices)
    names = list(track.keypoint_names)
    width, height = cast("tuple[int, int]", size)  # set by the loop: pieces is not empty
    scale = np.array([width / track.image_size[0], height / track.image_size[1]])
    seen = {k: track.present & (track.confidence[:, names.index(k)] >= cfg_f.frame_confidence)
            for k in HAND_KEYPOINTS if k in names}
    if not seen:
        return None, {"source": "pose_estimate", "unused": f"{estimator.name} has no wrist keypoints"}
    hand = max(seen, key=lambda k: int(seen[k].sum()))
    kin_ms = frame_idx * 1000.0 / video.fps - float(m.sync.sync_offset_ms_claimed) + kin_t[0]
    use = seen[hand] & (kin_ms >= kin_t[0]) & (kin_ms <= kin_t[-1])
    if use.sum() < cfg.min_target_frames:
        return None, {"source": "pose_estimate",
                      "unused": f"the demonstrator's wrist is seen confidently on {int(use.sum())} sampled frames "
                                f"< {cfg.min_target_frames}"}
    hand_px = track.keypoints_px[use, names.index(hand)].astype(np.float64) * scale
    cam = m.camera["primary"]
    intr = cam.intrinsics.model_dump()
    sx, sy = width / cam.intrinsics.width, height / cam.intrinsics.height
    intr = {**intr, "fx": intr["fx"] * sx, "cx": intr["cx"] * sx, "fy": intr["fy"] * sy, "cy": intr["cy"] * sy}
    cam_to_world = np.asarray(cam.extrinsics, dtype=np.float64)
    world_to_cam = np.linalg.inv(cam_to_world)
    q_at = _interp_joints(kin_t, q_sub, kin_ms[use])
    best: dict[str, Any] | None = None
    for link in robot.end_effector_links:
        try:
            ee = solver.chain(link).link_poses(q_at)[:, :3, 3]
        except ValueError:
            continue
        depth = ee @ world_to_cam[2, :3] + world_to_cam[2, 3]
        if np.any(depth <= 1e-3):
            continue  # behind the camera: the declared camera cannot have seen it
        ee_px = project_points(ee, intr, cam_to_world)
        a, _, res_px = fit_hand_to_end_effector(hand_px, ee_px)
        res_m = res_px * depth / intr["fx"]
        rms = float(np.sqrt(np.mean(res_m**2)))
        if best is None or rms < best["rms_pos_error_m"]:
            best = {"link": link, "rms_pos_error_m": round(rms, 6), "peak_pos_error_m": round(float(res_m.max()), 6),
                    "residual_px": {"rms": round(float(np.sqrt(np.mean(res_px**2))), 3),
                                    "max": round(float(res_px.max()), 3)},
                    "hand_to_robot_scale": round(a, 4), "end_effector_path_px": round(float(np.linalg.norm(
                        ee_px - ee_px.mean(axis=0), axis=1).max()), 3)}
    if best is None:
        return None, {"source": "pose_estimate", "unused": "no end-effector link in front of the declared camera"}
    return best | {"hand_keypoint": hand, "frames": int(use.sum()), "estimator": estimator.version,
                   "sync_offset_ms": float(m.sync.sync_offset_ms_claimed)}, None


_DEFAULT_ESTIMATOR: list = []


def _default_pose_estimator():
    """The registry's MediaPipe estimator, built once per process on the first human video."""
    if not _DEFAULT_ESTIMATOR:
        from gpu_consumers.pose import get_pose_estimator

        _DEFAULT_ESTIMATOR.append(get_pose_estimator("mediapipe"))
    return _DEFAULT_ESTIMATOR[0]


# --- the stage ---------------------------------------------------------------------------

def _interp_joints(kin_t: np.ndarray, q: np.ndarray, t: np.ndarray) -> np.ndarray:
    idx = np.clip(np.searchsorted(kin_t, t, side="right") - 1, 0, len(kin_t) - 2)
    w = ((t - kin_t[idx]) / (kin_t[idx + 1] - kin_t[idx]))[:, None]
    return q[idx] * (1 - w) + q[idx + 1] * w


def _stats(pos: np.ndarray, rot: np.ndarray, cfg: IKConfig) -> dict:
    return {
        "rms_pos_error_m": round(float(np.sqrt(np.mean(pos**2))), 6),
        "peak_pos_error_m": round(float(pos.max()), 6),
        "orientation_error_deg": {
            "mean": round(float(rot.mean()), 3),
            "p95": round(float(np.percentile(rot, 95)), 3),
            "max": round(float(rot.max()), 3),
            "fraction_above_limit": round(float(np.mean(rot > cfg.max_orientation_error_deg)), 4),
        },
    }


def _exceeded(stats: dict, cfg: IKConfig) -> list[str]:
    out = []
    if stats["rms_pos_error_m"] > cfg.max_rms_pos_error_m:
        out.append("ik_rms_exceeded")
    if stats["peak_pos_error_m"] > cfg.max_peak_pos_error_m:
        out.append("ik_peak_exceeded")
    if stats["orientation_error_deg"]["fraction_above_limit"] > cfg.max_orientation_exceed_fraction:
        out.append("ik_orientation_exceeded")
    return out


def s_retarget(rms_m: float, mean_deg: float, cfg: IKConfig) -> float:
    """Confidence in [0, 1] from the residuals: 0.5 at ``confidence_scale_pos_m`` RMS
    (position term) and at ``confidence_scale_rot_deg`` mean (orientation term)."""
    s_pos = 1.0 / (1.0 + (rms_m / cfg.confidence_scale_pos_m) ** 2)
    s_rot = 1.0 / (1.0 + (mean_deg / cfg.confidence_scale_rot_deg) ** 2)
    return float(s_pos * s_rot)


def trajectory_quality(kin_t: np.ndarray, q: np.ndarray, robot: RobotModel, joint_index: np.ndarray,
                       config: GateConfig) -> dict:
    """Smoothness and limit margins of the joints ``joint_index`` of ``q`` (T, robot.dof)."""
    gate_e = config.for_robot(*robot.key).gate_e
    idx = np.asarray(joint_index, dtype=np.int64)
    dt_ms = float(np.median(np.diff(kin_t)))
    window = window_samples(gate_e.smoothing_window_ms, dt_ms)
    # on the real timestamps (dropped samples and jitter are not jerk); the raw jerk, sensor
    # noise included: noise gate E tolerates shows here, in S_retarget's smoothness term
    q_idx = q[:, idx]
    jerk = local_derivatives(kin_t, q_idx, window).jerk
    out: dict = {"joints": int(idx.size), "window_samples": window, "jerk_ratio": None}
    if jerk.shape[0]:
        ratio = _row_max(np.abs(jerk) / (robot.jerk_limit[idx] * gate_e.jerk_factor))
        out["jerk_ratio"] = {"p50": round(float(np.median(ratio)), 4),
                             "p95": round(float(np.percentile(ratio, 95)), 4),
                             "max": round(float(ratio.max()), 4)}
    lower, upper = robot.pos_lower[idx], robot.pos_upper[idx]
    span = np.maximum(upper - lower, 1e-9)
    margin = _row_min(np.minimum(q_idx - lower, upper - q_idx) / span)
    out["limit_margin_fraction"] = {"min": round(float(margin.min()), 4),
                                    "p5": round(float(np.percentile(margin, 5)), 4)}
    return out


def _row_max(a: np.ndarray) -> np.ndarray:
    """``a.max(axis=1)`` of a (T, J) array with few columns, exactly: through its contiguous
    transpose (NumPy reduces a short row several times slower than a long column)."""
    return np.ascontiguousarray(a.T).max(axis=0)


def _row_min(a: np.ndarray) -> np.ndarray:
    """``a.min(axis=1)``, the same way."""
    return np.ascontiguousarray(a.T).min(axis=0)


def _retargeted_joints(robot: RobotModel, solver: "IKSolver") -> np.ndarray:
    """Joints of the chains from the base to every end-effector link (all joints if none)."""
    idx: set[int] = set()
    for link in robot.end_effector_links:
        try:
            idx.update(int(i) for i in solver.chain(link).joint_index)
        except ValueError:
            continue
    return np.array(sorted(idx), dtype=np.int64) if idx else np.arange(robot.dof)


def _pose_verdict(pose: dict, notes: list, trajectory: dict, cfg: IKConfig, thresholds: dict,
                  flags: list[str]) -> GateResult:
    """The IK residual verdict on a pose-derived target: position only (one view sees no
    orientation), the same limits (RMS 8 cm, peak 12 cm), ``s_retarget`` its position term."""
    rms, peak = pose["rms_pos_error_m"], pose["peak_pos_error_m"]
    metrics = {"applicable": True, "target_source": "pose_estimate", "targets": [pose | {"source": "pose_estimate"}],
               "target_frames": pose["frames"], "rms_pos_error_m": rms, "peak_pos_error_m": peak,
               "orientation_error_deg": None, "ik_feasibility": None,
               "s_retarget": round(1.0 / (1.0 + (rms / cfg.confidence_scale_pos_m) ** 2), 4), "trajectory": trajectory}
    if notes:
        metrics["unused_streams"] = notes
    failed = [code for code, over in (("ik_rms_exceeded", rms > cfg.max_rms_pos_error_m),
                                      ("ik_peak_exceeded", peak > cfg.max_peak_pos_error_m)) if over]
    metrics["failed_checks"] = failed
    flags = flags + ["ik_target_from_pose"]
    if failed:
        return result(GATE_ID, False, metrics, thresholds, failed[0], flags=flags)
    return result(GATE_ID, True, metrics, thresholds, flags=flags)


@dataclass
class _Job:
    """What the terms of ``check_ik`` hand on: the validated inputs, then the targets found."""

    view: BundleView
    config: GateConfig
    solver: IKSolver
    cfg: IKConfig
    thresholds: dict
    kin_t: np.ndarray
    q_sub: np.ndarray  # (T, robot.dof): the submitted joints, unsubmitted ones at home
    trajectory: dict = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    source: str | None = None
    _fk: dict = field(default_factory=dict)  # link -> (t_ms, poses) of the submitted joints

    def chain_ok(self, link: str) -> bool:
        try:
            self.solver.chain(link)
        except ValueError:
            return False
        return True

    def submitted_fk(self, link: str, t_ms: np.ndarray) -> np.ndarray:
        """Forward kinematics of the submitted joints at kinematic times ``t_ms``: computed
        once per link (the independence check asks for every object frame inside the
        kinematics, the residual for the grasped ones among them, which are looked up)."""
        done = self._fk.get(link)
        if done is not None:
            idx = np.clip(np.searchsorted(done[0], t_ms), 0, len(done[0]) - 1)
            if np.array_equal(done[0][idx], t_ms):
                return done[1][idx]
        poses = self.solver.chain(link).numpy.link_poses(_interp_joints(self.kin_t, self.q_sub, t_ms))
        self._fk[link] = (np.asarray(t_ms), poses)
        return poses


def _inputs(view: BundleView, config: GateConfig, solver: IKSolver) -> _Job:
    """Term 1: the bundle's joints and times, guarded (gates A and B have judged them; a
    stage is a pure function and guards its own maths)."""
    m = view.manifest
    robot = solver.robot
    if (m.robot_model_id, m.robot_model_revision) != robot.key:
        raise ConfigError(f"IK solver is for {robot.model_id}@{robot.revision}, bundle declares "
                          f"{m.robot_model_id}@{m.robot_model_revision}")
    cfg = config.for_robot(*robot.key).ik
    kin_t = view.read(TIMESTAMPS).astype(np.float64)
    q_in = view.read(JOINT_POS).astype(np.float64)
    if kin_t.ndim != 1 or len(kin_t) < 2 or np.any(np.diff(kin_t) <= 0):
        raise BundleError("kinematics timestamps are not strictly increasing", reason_code="timestamps_not_increasing")
    if q_in.shape != (len(kin_t), len(m.joint_names)):
        raise BundleError(f"joint_pos has shape {q_in.shape}", reason_code="shape_mismatch")
    if not np.isfinite(q_in).all():
        raise BundleError("joint_pos holds NaN or Inf", reason_code="non_finite_values")
    unknown = [n for n in m.joint_names if n not in robot.joint_names]
    if unknown:
        raise BundleError(f"joints unknown to {robot.model_id}: {unknown[:5]}", reason_code="unknown_joint_names")
    q_sub = np.tile(robot.home_qpos, (len(kin_t), 1))
    q_sub[:, [robot.joint_names.index(n) for n in m.joint_names]] = q_in
    return _Job(view, config, solver, cfg, cfg.model_dump(), kin_t, q_sub)


def _independent_targets(job: _Job) -> None:
    """Term 2: the targets, never from the joints — grasped objects (each checked for riding
    with its link on every frame: made from the joints, refused), else task waypoints."""
    job.targets, job.notes = object_targets(job.view, job.solver.robot, job.kin_t, job.cfg, job.chain_ok,
                                            job.submitted_fk)
    if any("derived_from_joints" in n for n in job.notes):
        job.flags.append("ik_object_derived_from_joints")
    job.source = "object_grasp" if job.targets else None
    if not job.targets:
        job.targets, more = waypoint_targets(job.view, job.kin_t, job.chain_ok)
        job.notes += more
        job.source = "task_waypoints" if job.targets else None


def _without_solver_target(job: _Job, pose_estimator) -> GateResult | None:
    """Term 3: the verdicts that need no IK solve — a human video's pose-derived target
    (option 2), or no independent target at all (not applicable)."""
    n_frames = sum(len(t.t_ms) for t in job.targets)
    if not job.targets and job.view.manifest.video["primary"].subject == "human":
        pose, note = pose_target(job.view, job.config, job.solver.robot, job.kin_t, job.q_sub, job.solver,
                                 pose_estimator if pose_estimator is not None else _default_pose_estimator())
        if pose is not None:
            return _pose_verdict(pose, job.notes, job.trajectory, job.cfg, job.thresholds, job.flags)
        job.notes.append(cast(dict, note))  # pose_target gives (None, note) when pose is None
    if not job.targets or n_frames < job.cfg.min_target_frames:
        why = "no object grasp or task waypoints independent of the joints" if not job.targets else \
            f"{n_frames} target frames < {job.cfg.min_target_frames}"
        return result(GATE_ID, True, {"applicable": False, "target_source": job.source, "reason": why,
                                      "unused_streams": job.notes, "s_retarget": None, "trajectory": job.trajectory},
                      job.thresholds, flags=job.flags + ["ik_no_independent_target"])
    return None


@dataclass
class _Solved:
    """Per target: the submitted joints' residual, the IK solution's, their joint distance."""

    target: Target
    submitted_pos: np.ndarray
    submitted_rot: np.ndarray
    solution: IKSolution
    joint_distance: np.ndarray


def _solve(job: _Job) -> list[_Solved]:
    """Term 4: every target against the submitted joints' forward kinematics, and solved."""
    out = []
    for tgt in job.targets:
        chain = job.solver.chain(tgt.link)
        fk = job.submitted_fk(tgt.link, tgt.t_ms)
        sol = job.solver.solve(tgt.link, tgt.pose, job.cfg)
        q_at = _interp_joints(job.kin_t, job.q_sub, tgt.t_ms)
        out.append(_Solved(tgt, np.linalg.norm(fk[:, :3, 3] - tgt.pose[:, :3, 3], axis=1),
                           rotation_angle_deg(fk, tgt.pose), sol, np.abs(sol.q - q_at[:, chain.joint_index])))
    return out


def _residual_stats(job: _Job, solved: list[_Solved]) -> tuple[dict, dict, dict]:
    """Term 5: residual statistics of the submitted joints and of the IK solution, the
    per-target summary and the joint distance: ``(submitted, feasibility, metrics)``."""
    cat = np.concatenate
    sub = _stats(cat([s.submitted_pos for s in solved]), cat([s.submitted_rot for s in solved]), job.cfg)
    feas = _stats(cat([s.solution.pos_error_m for s in solved]), cat([s.solution.rot_error_deg for s in solved]),
                  job.cfg)
    d = cat([s.joint_distance.ravel() for s in solved])
    per_target = [{"source": s.target.source, "link": s.target.link, "frames": int(len(s.target.t_ms)),
                   **s.target.details, "rms_pos_error_m": round(float(np.sqrt(np.mean(s.submitted_pos**2))), 6)}
                  for s in solved]
    metrics = {
        "applicable": True,
        "target_source": job.source,
        "targets": per_target,
        "target_frames": sum(len(s.target.t_ms) for s in solved),
        **sub,
        "ik_feasibility": feas | {"solve_ms": round(sum(s.solution.wall_ms for s in solved), 1),
                                  "iterations": sum(s.solution.iterations for s in solved)},
        "joint_distance_rad": {"rms": round(float(np.sqrt(np.mean(d**2))), 5), "max": round(float(d.max()), 5)},
    }
    return sub, feas, metrics


def _verdict(job: _Job, sub: dict, feas: dict, metrics: dict) -> GateResult:
    """Term 6: ``s_retarget`` (capped where the target matches the joints too well to be
    a measurement) and the verdict: the first limit exceeded, or ``ik_target_infeasible``
    where the IK solution within the limits misses by as much."""
    cfg, flags = job.cfg, job.flags
    score = s_retarget(sub["rms_pos_error_m"], sub["orientation_error_deg"]["mean"], cfg)
    if sub["rms_pos_error_m"] < cfg.exact_match_floor_m:
        flags.append("ik_target_matches_joints")
        score = min(score, 0.5)
    metrics = metrics | {"s_retarget": round(score, 4), "trajectory": job.trajectory}
    if job.notes:
        metrics["unused_streams"] = job.notes
    failed = _exceeded(sub, cfg)
    metrics["failed_checks"] = failed
    if failed:
        reason = "ik_target_infeasible" if _exceeded(feas, cfg) else failed[0]
        return result(GATE_ID, False, metrics, job.thresholds, reason, flags=flags)
    return result(GATE_ID, True, metrics, job.thresholds, flags=flags)


def check_ik(view: BundleView, config: GateConfig, solver: IKSolver, pose_estimator=None) -> GateResult:
    """The IK residual stage on one bundle with a warm ``solver`` for its robot: named terms
    in order — inputs, trajectory quality, independent targets (with the
    target-independence check), the verdicts without a solve (pose-derived target, not
    applicable), the solve, residual statistics, verdict. All of it under the solver's
    torch thread setting (its forward kinematics too: two threads on two shared cores
    cost several times one).

    ``pose_estimator``: for option 2 (a human video without object or waypoint target);
    ``None`` builds the registry's MediaPipe estimator once, when first needed."""
    job = _inputs(view, config, solver)
    with _torch_threads(solver.num_threads), torch.no_grad():
        job.trajectory = trajectory_quality(job.kin_t, job.q_sub, solver.robot, _retargeted_joints(solver.robot, solver),
                                            config)
        _independent_targets(job)
        early = _without_solver_target(job, pose_estimator)
        if early is not None:
            return early
        return _verdict(job, *_residual_stats(job, _solve(job)))
