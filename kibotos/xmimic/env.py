"""The batched XMimic environment (rsl-rl ``VecEnv``): G1 + cargo box per environment,
reference motion from XGen clips, PD control on joint targets (the reference's next frame
plus the policy's residual on its joints), the unified imitation reward, and DI / IT / DR
as the versioned config switches them.

Observation groups (every group is produced; the runner's ``obs_groups`` picks):
- ``proprio``: joint positions and velocities, previous action, root height, gravity and
  root velocity in the pelvis frame, episode phase;
- ``reference``: the reference's next frames (1 and 3 ahead): joint positions, key bodies
  and box pose in the pelvis frame, and the next contact flags;
- ``privileged`` (teacher, critics): the box's true pose, velocity, size, mass and friction,
  palms in the box frame, actual contacts;
- ``mocap`` (MoCap student): the box pose from a motion-capture stream with per-frame
  dropout (the last seen pose is kept) and noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from kibotos.xmimic import reward as rw
from kibotos.xmimic.clips import Clip, resample
from kibotos.xmimic.config import XMimicConfig
from kibotos.xmimic.model import policy_joint_ids
from kibotos.xmimic.rotations import quat_conj, quat_mul, quat_rotate_inverse, quat_to_6d
from kibotos.xmimic.sim import make_simulator, resolve_backend

LOOKAHEAD = (1, 3)


class References:
    """All clips' reference arrays padded to one length (indexing past a clip's end
    repeats its last frame), also side by side in one table so that a step reads every
    reference quantity of a frame with one gather (``frame``)."""

    # (name, columns) of ``table``, in order
    FIELDS = (("qpos", 36), ("qvel", 35), ("box", 7), ("contact", 3), ("keys", 12), ("palms_in_box", 6))

    def __init__(self, clips: list[Clip], end: str, device: str):
        self.lengths = torch.tensor([c.episode_frames(end) for c in clips], device=device)
        tmax = int(self.lengths.max()) + max(LOOKAHEAD) + 1

        def pad(a: np.ndarray) -> np.ndarray:
            idx = np.minimum(np.arange(tmax), len(a) - 1)
            return a[idx]

        def stack(get) -> torch.Tensor:
            return torch.as_tensor(np.stack([pad(get(c)) for c in clips]), dtype=torch.float32, device=device)

        self.table = torch.cat([  # (C, T, 99), columns as FIELDS
            stack(lambda c: c.qpos), stack(lambda c: c.qvel), stack(lambda c: c.object_pose),
            stack(lambda c: c.contact[:, :3].astype(np.float32)), stack(lambda c: c.key_body_pos).flatten(2),
            stack(lambda c: c.palm_relation()).flatten(2)], -1)  # the hand-box relation tracked (Clip.palms_in_box)
        # each field a view of its columns
        fields = self._split(self.table)
        self.qpos, self.qvel, self.box, self.contact = fields["qpos"], fields["qvel"], fields["box"], fields["contact"]
        self.keys, self.palms_in_box = fields["keys"], fields["palms_in_box"]
        self.box_size = torch.as_tensor(np.stack([c.box_size for c in clips]), dtype=torch.float32, device=device)
        self.mass = torch.tensor([c.mass_kg for c in clips], dtype=torch.float32, device=device)
        self.fps = clips[0].fps
        if any(abs(c.fps - self.fps) > 1e-9 for c in clips):
            raise ValueError("References need clips at one frame rate (clips.resample)")
        self.tmax = tmax

    @classmethod
    def _split(cls, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """``rows`` (..., 99) as one view per field; key bodies (..., 4, 3), palms (..., 2, 3)."""
        parts = dict(zip([k for k, _ in cls.FIELDS], rows.split([c for _, c in cls.FIELDS], -1), strict=True))
        parts["keys"] = parts["keys"].unflatten(-1, (4, 3))
        parts["palms_in_box"] = parts["palms_in_box"].unflatten(-1, (2, 3))
        return parts

    def frame(self, clip: torch.Tensor, t: torch.Tensor) -> RefFrame:
        return RefFrame(**self._split(self.table[clip, t.clamp(max=self.tmax - 1)]))


@dataclass
class RefFrame:
    """One reference frame per environment (views into one gathered row)."""
    qpos: torch.Tensor          # (N, 36)
    qvel: torch.Tensor          # (N, 35)
    box: torch.Tensor           # (N, 7) the clip's box pose (without an episode's box offset)
    contact: torch.Tensor       # (N, 3)
    keys: torch.Tensor          # (N, 4, 3)
    palms_in_box: torch.Tensor  # (N, 2, 3)


class XMimicEnv(VecEnv):
    def __init__(self, clips: list[Clip], cfg: XMimicConfig, *, task: str | None = None, num_envs: int | None = None,
                 device: str = "cpu", backend: str | None = None, training: bool = True, seed: int = 0):
        if str(device) == "cpu":
            # small batched tensors: torch's intra-op threads only contend (measured 10 ms per
            # reduction under load on 2 cores, against ~20 us single-threaded)
            torch.set_num_threads(1)
        self.cfg = cfg
        self.task_name = task or cfg.task
        tcfg = cfg.task_config(self.task_name)
        self.training = training
        self.device = device
        self.num_envs = num_envs or tcfg.num_envs
        # one control rate for every clip: a clip recorded at another rate is resampled
        clips = [resample(c, cfg.sim.control_fps) for c in clips]
        self.clips = clips
        self.ref = References(clips, cfg.sim.end, device)
        self.fixed_pelvis = tcfg.fixed_pelvis
        self.backend = resolve_backend(backend or tcfg.backend, device)
        self.control_dt = 1.0 / self.ref.fps
        self.sim = make_simulator(self.backend, num_envs=self.num_envs, fixed_pelvis=tcfg.fixed_pelvis,
                                  control_dt=self.control_dt, substeps=cfg.sim.substeps, device=device,
                                  threads=cfg.sim.threads, physics=cfg.sim.physics)
        self.joint_ids = torch.as_tensor(policy_joint_ids(tcfg.policy_joints), device=device)
        self.num_actions = len(self.joint_ids)
        self.max_episode_length = int(self.ref.lengths.max())
        self.gen = torch.Generator(device=device).manual_seed(seed)
        n = self.num_envs
        z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
        self.episode_length_buf = torch.zeros(n, dtype=torch.long, device=device)
        self.clip_idx = torch.arange(n, device=device) % len(clips)
        self.frame = torch.zeros(n, dtype=torch.long, device=device)
        self.prev_action = z(n, self.num_actions)
        self.action = z(n, self.num_actions)
        self.box_size = z(n, 3)
        self.relation_scale = torch.ones(n, 3, device=device)
        self.box_mass = z(n)
        self.box_friction = z(n)
        self.kp_scale = torch.ones(n, device=device)
        self.lost_contact = torch.zeros(n, dtype=torch.long, device=device)
        self.mocap_box = z(n, 7)
        self.mocap_fresh = z(n, 1)
        # per-episode accumulators for success (README "XMimic: metrics")
        self.hand_err_sum = z(n)
        self.hand_err_n = z(n)
        self.hand_err_body_sum = z(n)  # the same against the reference palms where the body puts them
        self.terminated_early = torch.zeros(n, dtype=torch.bool, device=device)
        self.finished = torch.zeros(n, dtype=torch.bool, device=device)  # evaluation: one episode per env
        self.stats = EpisodeStats()
        self.box_offset = z(n, 3)
        self.clip_failure = torch.ones(len(clips), device=device)  # running failure rate per clip (1: unknown)
        self.last_outcome: dict[str, torch.Tensor] = {}
        self._derived: tuple | None = None  # (state, palms in box, contacts): see _palms_contacts
        q_lo, q_hi = self.sim_joint_limits()
        self.q_lo, self.q_hi = q_lo[self.joint_ids], q_hi[self.joint_ids]
        self.push_every = max(1, int(round(cfg.dr.push_interval_s / self.control_dt)))
        self.reset_envs(torch.arange(n, device=device))
        self.state = self.sim.state()
        self._obs = self._observations()

    # -- helpers ------------------------------------------------------------------
    def sim_joint_limits(self) -> tuple[torch.Tensor, torch.Tensor]:
        from kibotos.xgen import g1

        lo, hi = g1.joint_limits()
        return (torch.as_tensor(lo, dtype=torch.float32, device=self.device),
                torch.as_tensor(hi, dtype=torch.float32, device=self.device))

    def _uniform(self, lo: float, hi: float, *shape) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=self.gen, device=self.device)

    def _ref_box(self, ref: RefFrame | None = None) -> torch.Tensor:
        """The reference box pose of ``ref`` (None: the current frame), shifted by this
        episode's box offset (DI)."""
        b = (ref if ref is not None else self._ref_frame()).box.clone()
        b[:, :3] += self.box_offset
        return b

    # -- resets -------------------------------------------------------------------
    def reset_envs(self, ids: torch.Tensor) -> None:
        if len(ids) == 0:
            return
        cfg, k = self.cfg, len(ids)
        if self.training:
            # failure-weighted clip sampling (as PHC / HumanX): clips that still fail get the
            # episodes; every clip keeps at least `sampling_floor` of the weight
            w = cfg.di.sampling_floor + (self.clip_failure if cfg.di.failure_weighted_sampling
                                         else torch.ones_like(self.clip_failure))
            self.clip_idx[ids] = torch.multinomial(w, k, replacement=True, generator=self.gen)
        lengths = self.ref.lengths[self.clip_idx[ids]]
        start = torch.zeros(k, dtype=torch.long, device=self.device)
        if self.training and cfg.di.enabled:
            start = (torch.rand(k, generator=self.gen, device=self.device) * cfg.di.max_start_fraction
                     * (lengths - 1).float()).long()
        self.frame[ids] = start
        self.episode_length_buf[ids] = 0
        c = self.clip_idx[ids]
        qpos = self.ref.qpos[c, start].clone()
        qvel = self.ref.qvel[c, start].clone()
        box = self.ref.box[c, start].clone()
        size = self.ref.box_size[c].clone()
        mass = self.ref.mass[c].clone()
        friction = torch.full((k,), cfg.sim.box_friction, device=self.device)
        kp = torch.full((k,), cfg.control.kp_scale, device=self.device)
        offset = torch.zeros(k, 3, device=self.device)  # reference box shift of this episode
        if self.training and cfg.di.enabled:
            noise = self._uniform(-1, 1, k, len(self.joint_ids)) * cfg.di.joint_noise_rad
            qpos[:, 7 + self.joint_ids] += noise
            shift = self._uniform(-1, 1, k, 2) * cfg.di.box_noise_m
            if cfg.di.box_noise_moves_reference:
                # the box only moves where no palm touches it yet (a box moved inside the pads
                # would be thrown out); the reference box moves with it, as in a GSR variant
                free = (self.ref.contact[c, start, :2] < 0.5).all(-1)
                shift = shift * free[:, None]
                offset[:, :2] = shift
            box[:, :2] += shift
        if self.training and cfg.dr.enabled:
            d = cfg.dr
            mass *= self._uniform(*d.box_mass_scale, k)
            s = self._uniform(*d.box_size_scale, k)
            box[:, 2] += (s - 1) * size[:, 2] / 2  # the box rests where it did
            if cfg.di.box_noise_moves_reference:
                offset[:, 2] = (s - 1) * size[:, 2] / 2
            size *= s[:, None]
            friction = self._uniform(*d.box_friction, k) * cfg.sim.box_friction
            kp = self._uniform(*d.kp_scale, k) * cfg.control.kp_scale
        self.box_size[ids], self.box_mass[ids], self.box_friction[ids], self.kp_scale[ids] = size, mass, friction, kp
        self.relation_scale[ids] = size / self.ref.box_size[c]  # the hand-box relation scales with a DR-resized box
        self.box_offset[ids] = offset
        self.sim.reset_envs(ids, qpos, qvel, box, size, mass, friction, kp)
        self.prev_action[ids] = 0.0
        self.action[ids] = 0.0
        self.lost_contact[ids] = 0
        self.mocap_box[ids] = box
        self.mocap_fresh[ids] = 1.0
        self.hand_err_sum[ids] = 0.0
        self.hand_err_n[ids] = 0.0
        self.hand_err_body_sum[ids] = 0.0
        self.terminated_early[ids] = False

    # -- VecEnv -------------------------------------------------------------------
    def get_observations(self) -> TensorDict:
        return self._obs

    def _ref_frame(self, offset: int = 0) -> RefFrame:
        return self.ref.frame(self.clip_idx, self.frame + offset)

    def _palms_contacts(self, st) -> tuple[torch.Tensor, torch.Tensor]:
        """(palms in the box frame (N, 2, 3), contacts (N, 3) bool) of state ``st``, computed
        once per state (the reward and the observation of a step without resets share them)."""
        if self._derived is None or self._derived[0] is not st:
            palms = rw.palms_in_box(st.key_body_pos, st.box_pose)
            contacts = rw.contacts(palms, st.box_pose, self.box_size, self.cfg.reward.contact_tolerance_m)
            self._derived = (st, palms, contacts)
        return self._derived[1], self._derived[2]

    def step(self, actions: torch.Tensor):
        cfg = self.cfg
        actions = actions.to(self.device).clamp(-5.0, 5.0)
        self.prev_action, self.action = self.action, actions
        now, nxt = self._ref_frame(0), self._ref_frame(1)
        target = nxt.qpos[:, 7:].clone()
        target[:, self.joint_ids] += actions * cfg.control.action_scale_rad
        base_from = now.qpos[:, :7] if self.fixed_pelvis else None
        base_to = nxt.qpos[:, :7] if self.fixed_pelvis else None
        grip = nxt.contact[:, :2]  # the clip's contact graph commands the grip
        self.sim.step(target, grip, base_from, base_to)
        self.frame += 1
        self.episode_length_buf += 1
        if self.training and cfg.dr.enabled and cfg.dr.push_box_velocity_m_s > 0:
            pushed = torch.nonzero(self.episode_length_buf % self.push_every == 0).flatten()
            if len(pushed):
                v = self._uniform(-1, 1, len(pushed), 3) * cfg.dr.push_box_velocity_m_s
                v[:, 2] = 0.0
                self.sim.push_box(pushed, v)
        st = self.state = self.sim.state()

        # reward (the reference at the new frame is `nxt`)
        box_ref = self._ref_box(nxt)
        keys_ref = nxt.keys
        palms_ref = nxt.palms_in_box * self.relation_scale[:, None, :]
        ref_contact = nxt.contact > 0.5
        palms, contacts = self._palms_contacts(st)
        j = self.joint_ids
        terms = rw.compute(cfg.reward, rw.RewardInputs(
            q=st.qpos[:, 7 + j], qd=st.qvel[:, 6 + j], q_ref=nxt.qpos[:, 7 + j], qd_ref=nxt.qvel[:, 6 + j],
            keys=st.key_body_pos, keys_ref=keys_ref, box=st.box_pose, box_ref=box_ref, palms=palms,
            palms_ref=palms_ref, contacts=contacts, contacts_ref=ref_contact, action=self.action,
            prev_action=self.prev_action, torque=st.torque[:, j], q_lo=self.q_lo, q_hi=self.q_hi))
        rewards = rw.total(cfg.reward, terms)

        # tracking of the hold (success) and interaction termination
        holding = ref_contact[:, 0] & ref_contact[:, 1]
        rel = (palms - palms_ref).norm(dim=-1)
        self.hand_err_sum += torch.where(holding, rel.mean(-1), 0.0)
        # where the reference body puts the palms, in the box frame: on a training clip the
        # same relation; on a held-out variant (box moved, body not) a different, equally
        # legitimate target: a box moved along the palm faces is rightly held off-centre
        rel_body = (palms - rw.palms_in_box(keys_ref, box_ref)).norm(dim=-1)
        self.hand_err_body_sum += torch.where(holding, rel_body.mean(-1), 0.0)
        self.hand_err_n += holding.float()
        self.lost_contact = torch.where(holding & ~(contacts[:, 0] & contacts[:, 1]), self.lost_contact + 1, 0)
        box_far = (st.box_pose[:, :3] - box_ref[:, :3]).norm(dim=-1) > cfg.it.box_tolerance_m
        palm_far = (st.key_body_pos[:, :2] - keys_ref[:, :2]).norm(dim=-1).max(-1).values > cfg.it.body_tolerance_m
        bad = ~torch.isfinite(st.qpos).all(-1) | ~torch.isfinite(st.box_pose).all(-1)
        if st.unstable is not None:
            bad |= st.unstable
        terminated = bad.clone()
        if self.training and cfg.it.enabled:
            terminated |= box_far | palm_far | (self.lost_contact >= cfg.it.contact_loss_frames)
        length = self.ref.lengths[self.clip_idx]
        time_outs = (self.frame >= length - 1) & ~terminated
        dones = terminated | time_outs
        if not self.training:
            dones &= ~self.finished
            self.finished |= dones
        rewards = torch.where(bad, torch.zeros_like(rewards), rewards)
        means = self.stats.add_step(terms, rewards)

        extras: dict[str, Any] = {"time_outs": time_outs, "log": {f"/reward/{k}": means[i] for i, k in enumerate(terms)}}
        done_ids = torch.nonzero(dones).flatten()
        if len(done_ids):
            self.terminated_early[done_ids] = terminated[done_ids]
            out = self.outcome(done_ids)
            self.last_outcome = out
            extras["log"]["/episode/success"] = out["success"].float().mean()
            extras["log"]["/episode/terminated_early"] = terminated[done_ids].float().mean()
            extras["episode_outcome"] = out
            self.stats.add_episodes(out["success"])
            # running failure rate per clip: each finished episode moves its clip's estimate 10 %
            fail = (~out["success"]).float()
            cnt = torch.zeros_like(self.clip_failure).index_add_(0, out["clip"], torch.ones_like(fail))
            tot = torch.zeros_like(self.clip_failure).index_add_(0, out["clip"], fail)
            a = 1 - 0.9 ** cnt
            self.clip_failure = (1 - a) * self.clip_failure + a * tot / cnt.clamp(min=1)
            if self.training:
                self.reset_envs(done_ids)
                self.state = self.sim.state()
        self._obs = self._observations()
        # per second of motion (as Isaac Lab / legged_gym scale rewards): returns stay O(1)
        return self._obs, rewards.clamp(min=-10.0) * self.control_dt, dones.long(), extras

    def outcome(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Success of the episodes of ``ids`` as they stand (README "XMimic: metrics")."""
        e = self.cfg.eval
        st = self.state
        box_ref = self._ref_box()[ids]
        box = st.box_pose[ids]
        z_err = (box[:, 2] - box_ref[:, 2]).abs()
        xy_err = (box[:, :2] - box_ref[:, :2]).norm(dim=-1)
        n = self.hand_err_n[ids].clamp(min=1)
        # the hands held the box as the clip's interaction does (relation) or where its body
        # motion puts them, whichever is closer (README "XMimic: metrics")
        hand_rel, hand_body = self.hand_err_sum[ids] / n, self.hand_err_body_sum[ids] / n
        hand_err = torch.minimum(hand_rel, hand_body)
        unstable = st.unstable[ids] if st.unstable is not None else torch.zeros_like(z_err, dtype=torch.bool)
        success = (~unstable & (z_err < e.final_height_tolerance_m) & (xy_err < e.max_final_box_xy_error_m)
                   & (hand_err < e.max_mean_hand_box_error_m) & ~self.terminated_early[ids]
                   & torch.isfinite(box).all(-1))
        return {"env": ids, "clip": self.clip_idx[ids], "success": success, "final_height_error_m": z_err,
                "final_xy_error_m": xy_err, "mean_hand_box_error_m": hand_err,
                "hand_box_error_relation_m": hand_rel, "hand_box_error_body_m": hand_body,
                "terminated_early": self.terminated_early[ids].clone()}

    # -- observations -------------------------------------------------------------
    def _observations(self) -> TensorDict:
        st, cfg = self.state, self.cfg
        n = self.num_envs
        root_p, root_q = st.qpos[:, :3], st.qpos[:, 3:7]
        box = st.box_pose
        # motion capture: a frame is lost with probability `dropout` (the last seen pose stays)
        mc = cfg.student.mocap
        seen = torch.rand(n, generator=self.gen, device=self.device) >= mc.dropout
        noisy = box.clone()
        noisy[:, :3] += torch.randn(n, 3, generator=self.gen, device=self.device) * mc.noise_m
        self.mocap_box = torch.where(seen[:, None], noisy, self.mocap_box)
        self.mocap_fresh = seen.float()[:, None]
        r1, r3 = (self._ref_frame(k) for k in LOOKAHEAD)
        # every point and vector in the pelvis frame, one batched rotation (index: comment)
        g = torch.zeros(n, 1, 3, device=self.device)
        g[..., 2] = -1.0
        points = torch.cat([r1.keys, r1.box[:, None, :3] + self.box_offset[:, None],          # 0-3, 4
                            r3.keys, r3.box[:, None, :3] + self.box_offset[:, None],          # 5-8, 9
                            box[:, None, :3], self.mocap_box[:, None, :3]], 1) - root_p[:, None]  # 10, 11
        local = quat_rotate_inverse(root_q[:, None], torch.cat(
            [points, g, st.qvel[:, None, :3], st.box_vel[:, None, :3]], 1))                  # 12, 13, 14
        # orientations in the pelvis frame: reference box 1 and 3 ahead, the box, the mocap box
        rot = quat_to_6d(quat_mul(quat_conj(root_q)[:, None], torch.stack(
            [r1.box[:, 3:], r3.box[:, 3:], box[:, 3:], self.mocap_box[:, 3:]], 1)))          # (N, 4, 6)
        length = self.ref.lengths[self.clip_idx].float()
        q = st.qpos[:, 7:]
        proprio = torch.cat([
            q, 0.1 * st.qvel[:, 6:], self.action, root_p[:, 2:3], local[:, 12], local[:, 13], 0.25 * st.qvel[:, 3:6],
            (self.frame.float() / length)[:, None],
        ], -1)
        reference = torch.cat([r1.qpos[:, 7:] - q, local[:, 0:4].flatten(1), local[:, 4], rot[:, 0],
                               r3.qpos[:, 7:] - q, local[:, 5:9].flatten(1), local[:, 9], rot[:, 1], r1.contact], -1)
        palms, contacts = self._palms_contacts(st)
        privileged = torch.cat([
            local[:, 10], rot[:, 2], local[:, 14], 0.25 * st.box_vel[:, 3:], palms.flatten(1),
            self.box_size, 0.2 * self.box_mass[:, None], self.box_friction[:, None], contacts.float(),
        ], -1)
        mocap = torch.cat([local[:, 11], rot[:, 3], self.mocap_fresh], -1)
        obs = {"proprio": proprio, "reference": reference, "privileged": privileged, "mocap": mocap}
        obs = {k: torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0) for k, v in obs.items()}
        return TensorDict(obs, batch_size=[n], device=self.device)


class EpisodeStats:
    """Means of the reward terms and the success rate since the last ``pop`` (progress
    events, the CLI's progress bar)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sums: torch.Tensor | None = None  # summed per-step means, kept on the device until ``pop``
        self.names: list[str] = []
        self.steps = 0
        self.successes = 0
        self.episodes = 0

    def add_step(self, terms: dict[str, torch.Tensor], rewards: torch.Tensor) -> torch.Tensor:
        """Adds a step's means; returns them (terms in order, then the total) as one tensor."""
        means = torch.stack([*terms.values(), rewards]).mean(-1)
        self.names = [*terms, "total"]
        self._sums = means.double() if self._sums is None else self._sums + means
        self.steps += 1
        return means

    def add_episodes(self, success: torch.Tensor) -> None:
        self.successes += int(success.sum())
        self.episodes += len(success)

    def pop(self) -> dict:
        sums = self._sums.tolist() if self._sums is not None else []
        out = {"reward_terms": {k: v / max(self.steps, 1) for k, v in zip(self.names, sums, strict=True)},
               "episodes": self.episodes, "success_rate": self.successes / self.episodes if self.episodes else None}
        self.reset()
        return out
