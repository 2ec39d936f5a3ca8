"""The novelty stage end to end against a real embedded ClickHouse (chdb): sample
episodes, "slight perturbation" copies written with the bundle writer, the index in
``kibotos.novelty_index`` (migrations applied by ``infra.migrate``).

One chdb store for the module (chdb locks a directory to one process); every test uses
its own seeds, so the rows other tests add are unrelated episodes.
"""

from __future__ import annotations

import itertools
import uuid

import numpy as np
import pytest

from infra.migrate import apply_migrations
from kibotos.bundle import open_bundle
from kibotos.novelty import GATE_ID, REASON_COPIED, REASON_DUPLICATE, NoveltyChecker, load_novelty_config
from kibotos.novelty.index import _motion_pairs, _spatial_offsets
from kibotos.robots import get_robot
from kibotos.synthetic import perturb
from kibotos.synthetic.samples import Episode, make_episode
from kibotos.warehouse import open_client
from tests.fixtures.episodes import PANDA, ROBOT_IDS, ROBOTS
from tests.kibotos.novelty.reference import motion_corr, trajectory_corr

pytestmark = pytest.mark.integration

CFG = load_novelty_config()
ALICE, BOB = "miner-alice", "miner-bob"
DAY_MS = 86_400_000
_clock = itertools.count(1_800_000_000_000, 60_000)  # a minute between checks


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    c = open_client(f"chdb://{tmp_path_factory.mktemp('novelty-chdb')}")
    apply_migrations(c)
    yield c
    c.close()


@pytest.fixture(scope="module")
def checker(client):
    return NoveltyChecker(client, CFG)


@pytest.fixture
def submit(checker, tmp_path):
    """Write ``ep`` with the bundle writer and check it (at the next clock tick unless
    ``now_ms`` is given); returns the GateResult."""

    def run(ep: Episode, now_ms: int | None = None, check=None):
        path = tmp_path / f"{uuid.uuid4().hex}.zarr.zip"
        if not path.exists():
            ep.write(path)
        with open_bundle(path) as view:
            return (check or checker).check(view, ep.manifest["submission_id"], ep.manifest["miner_id"],
                                            next(_clock) if now_ms is None else now_ms)

    return run


def episode(seed: int, miner: str = ALICE, robot=PANDA) -> Episode:
    return make_episode(get_robot(*robot), seed=seed, miner_id=miner)


def sid(ep: Episode) -> str:
    return ep.manifest["submission_id"]


# name -> (frames transform, re-encoding crf, least ``visual`` expected). Over other
# kinematics only near-identical footage counts (one task in one place looks alike on
# video: README "Look-alikes are not copies"); a crop that is not centred, found by the
# spatial shift search only approximately, is caught with its own kinematics
# (WHOLE_COPIES), and a video over kinematics it does not show by the align job.
VIDEO_PERTURBATIONS = {
    "reencode_crf35": (perturb.identity, 35, 1.0),
    "brightness_plus_35": (perturb.brightness(35), 23, 1.0),
    "mirrored": (perturb.mirror, 23, 1.0),
    "crop_90": (perturb.crop(0.9), 23, 1.0),
    "crop_85": (perturb.crop(0.85), 23, 1.0),
    "logo_burned_in": (perturb.burn_logo(), 23, 1.0),
}


def test_exact_copy_from_the_same_miner_is_a_duplicate_reject(submit):
    base = episode(1000)
    first = submit(base)
    assert first.gate == GATE_ID and first.passed and first.metrics["s_novel"] == 1.0
    assert first.metrics["same_miner_match"] is None and first.metrics["cross_miner_match"] is None

    copy = submit(perturb.copy_of(base, ALICE))
    assert not copy.passed and copy.reason_code == REASON_DUPLICATE
    assert copy.metrics["s_novel"] == 0.0 and "exact_duplicate" in copy.flags
    match = copy.metrics["same_miner_match"]
    assert match["submission_id"] == sid(base) and match["near_exact"] and match["match"] == 1.0
    assert copy.metrics["flags"] == copy.flags


@pytest.mark.parametrize("name", list(VIDEO_PERTURBATIONS))
def test_perturbed_video_with_other_kinematics_is_caught_by_the_video(submit, name):
    """The same video, perturbed, over someone else's kinematics: only the video can tell."""
    seed = 1100 + 10 * list(VIDEO_PERTURBATIONS).index(name)
    base, donor = episode(seed), episode(seed + 1, miner="donor")
    submit(base)
    fn, crf, least_visual = VIDEO_PERTURBATIONS[name]
    copy = perturb.copy_of(base, ALICE, video=fn, crf=crf, timestamps_ms=donor.timestamps_ms,
                           joint_pos=donor.joint_pos, joint_vel=donor.joint_vel)
    result = submit(copy)
    m = result.metrics
    match = m["same_miner_match"]
    assert match is not None and match["submission_id"] == sid(base), m
    assert match["visual"] >= least_visual and match["motion_corr"] > CFG.novelty.motion.corr_lo
    assert match["trajectory_corr"] < CFG.novelty.trajectory.corr_lo and match["trajectory"] == 0.0
    assert result.passed and m["s_novel"] <= 1.0 - least_visual + 0.01
    assert {"same_miner_near_duplicate", "same_miner_video_reuse"} <= set(result.flags)
    if name == "mirrored":
        assert match["motion_variant"] == "mirror" and "same_miner_mirror_copy" in result.flags
    if name == "logo_burned_in":
        assert m["artifacts"]["cues"]["static_overlay"]["overlay"] is not None
        assert "artifact_static_overlay" in result.flags and m["fingerprint"]["masked_box"] is not None


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_combined_video_perturbation_is_caught_on_every_robot(submit, key):
    seed = 1200 + ROBOTS.index(key) * 10
    base, donor = episode(seed, robot=key), episode(seed + 1, miner="donor", robot=key)
    submit(base)

    def combined(frames):
        return perturb.brightness(-25)(perturb.crop(0.85)(perturb.mirror(frames)))

    # the whole episode copied (its kinematics with 0.01 rad of noise), the video perturbed
    copy = perturb.copy_of(base, ALICE, video=combined, crf=30, joint_pos=perturb.noisy_trajectory(base, 0.01),
                           joint_vel=None)
    m = submit(copy).metrics
    assert m["same_miner_match"]["submission_id"] == sid(base) and m["same_miner_match"]["match"] >= 0.8, m
    assert m["s_novel"] <= 0.2 and m["copy"]["match"] >= 0.8
    # the same video over another episode's kinematics: only near-identical footage counts
    swapped = perturb.copy_of(base, "miner-swapper", video=combined, crf=30, timestamps_ms=donor.timestamps_ms,
                              joint_pos=donor.joint_pos, joint_vel=donor.joint_vel)
    cross = submit(swapped).metrics["cross_miner_match"]
    if cross is not None and cross["trajectory"] == 0.0:
        mc = CFG.novelty.motion
        strict = min(1.0, max(0.0, (cross["motion_corr"] - mc.corr_lo_other_motion)
                              / (mc.corr_hi_other_motion - mc.corr_lo_other_motion)))
        assert cross["visual"] == pytest.approx(strict, abs=1e-3), cross


TRAJECTORY_PERTURBATIONS = {
    "time_shift_1300ms": lambda ep: perturb.shifted_trajectory(ep, 1300),
    "noise_0.02rad": lambda ep: (ep.timestamps_ms, perturb.noisy_trajectory(ep, 0.02)),
    "shift_and_noise": lambda ep: (perturb.shifted_trajectory(ep, 700)[0],
                                   perturb.shifted_trajectory(ep, 700)[1]
                                   + np.random.default_rng(3).normal(0, 0.02, ep.joint_pos.shape).astype(np.float32)),
    "clock_offset": lambda ep: (ep.timestamps_ms + 5000, ep.joint_pos),
}


@pytest.mark.parametrize("name", list(TRAJECTORY_PERTURBATIONS))
def test_perturbed_kinematics_with_another_video_is_caught_by_the_trajectory(submit, name):
    seed = 1300 + 10 * list(TRAJECTORY_PERTURBATIONS).index(name)
    base, donor = episode(seed), episode(seed + 1, miner="donor")
    submit(base)
    ts, q = TRAJECTORY_PERTURBATIONS[name](base)
    result = submit(perturb.copy_of(base, ALICE, timestamps_ms=ts, joint_pos=q, joint_vel=None,
                                    video_mp4=donor.video_mp4))
    match = result.metrics["same_miner_match"]
    assert match is not None and match["submission_id"] == sid(base), result.metrics
    assert match["trajectory_corr"] >= CFG.novelty.trajectory.corr_hi and match["trajectory"] == 1.0
    assert match["visual"] == 0.0
    assert result.passed and result.metrics["s_novel"] <= 0.05
    assert "same_miner_trajectory_reuse" in result.flags


def test_copy_by_another_miner_is_rejected_when_near_exact_and_a_full_copy_match_otherwise(submit):
    base = episode(1400)
    submit(base)
    # an exact copy and a cropped one, each by a miner of its own
    for miner, video in ((BOB, None), ("miner-carol", perturb.crop(0.9))):
        result = submit(perturb.copy_of(base, miner, video=video))
        m = result.metrics
        assert m["same_miner_match"] is None
        assert m["cross_miner_match"]["miner_id"] == ALICE and m["cross_miner_match"]["match"] == 1.0
        assert m["cross_miner_match"]["near_exact"] == (video is None)
        assert m["copy"] == {"scope": "cross_miner", "submission_id": sid(base), "miner_id": ALICE, "match": 1.0,
                             "near_exact": video is None}
        assert "cross_miner_near_duplicate" in result.flags
        if video is None:
            assert not result.passed and result.reason_code == REASON_COPIED and m["s_novel"] == 0.0
            assert "exact_copy" in result.flags
            continue
        assert result.passed and result.reason_code is None
        # the cross-miner downweight, times the (small) synthetic-artifact factor
        pen = CFG.novelty.penalties
        assert m["artifact_score"] < 0.1
        assert m["s_novel"] == pytest.approx((1 - pen.cross_miner) * (1 - pen.artifact * m["artifact_score"]), abs=1e-4)


# A copier's perturbations of a whole episode (video and kinematics together), as issue
# "copies do not pay" lists them. Each must come out as a copy: rejected as near-exact, or
# a copy match at which the reward keeps only its minimum factor.
def _noisy_brighter(ep, miner):  # measured before the copy rule: paid 89 % of the original
    return perturb.copy_of(ep, miner, video=perturb.brightness(12), joint_pos=perturb.noisy_trajectory(ep, 0.002),
                           joint_vel=None)


WHOLE_COPIES = {
    "noise_reencode_brightness": _noisy_brighter,
    "joint_noise_0.01": lambda ep, m: perturb.copy_of(ep, m, joint_pos=perturb.noisy_trajectory(ep, 0.01),
                                                      joint_vel=None),
    "reencode_crf35": lambda ep, m: perturb.copy_of(ep, m, video=perturb.identity, crf=35),
    "contrast_1.3": lambda ep, m: perturb.copy_of(ep, m, video=perturb.contrast(1.3)),
    "contrast_0.75_brightness": lambda ep, m: perturb.copy_of(
        ep, m, video=lambda f: perturb.brightness(-15)(perturb.contrast(0.75)(f))),
    "mirrored": lambda ep, m: perturb.copy_of(ep, m, video=perturb.mirror),
    "crop_85": lambda ep, m: perturb.copy_of(ep, m, video=perturb.crop(0.85)),
    "crop_90_off_centre": lambda ep, m: perturb.copy_of(ep, m, video=perturb.crop(0.9, dx=0.04)),
    # off the config's time-scale grid on purpose
    "speed_1.13": lambda ep, m: perturb.speed_changed(ep, m, 1.13),
    "speed_0.875": lambda ep, m: perturb.speed_changed(ep, m, 0.875),
    "speed_1.21": lambda ep, m: perturb.speed_changed(ep, m, 1.21),
    "trimmed_ends": lambda ep, m: perturb.trimmed(ep, m, 1000, 800),
}


@pytest.mark.parametrize("scope", ["cross_miner", "same_miner"])
def test_every_whole_episode_perturbation_is_caught_as_a_copy(submit, scope):
    from kibotos.scoring import copy_factor, load_scoring_config

    scoring = load_scoring_config()
    base = episode(2000 if scope == "cross_miner" else 2001)
    assert submit(base).passed
    seen = {sid(base)}
    for i, (name, make) in enumerate(WHOLE_COPIES.items()):
        # across miners a copier of its own for each perturbation; the best match may be
        # an earlier copy of the same original (a copy of a copy is a copy)
        miner = f"copier-{scope}-{i}" if scope == "cross_miner" else ALICE
        ep = make(base, miner)
        result = submit(ep)
        m = result.metrics
        copy = m["copy"]
        assert copy is not None and copy["scope"] == scope and copy["submission_id"] in seen, (name, m)
        seen.add(sid(ep))
        rejected = {"cross_miner": REASON_COPIED, "same_miner": REASON_DUPLICATE}[scope]
        if not result.passed:
            assert result.reason_code == rejected and copy["near_exact"], (name, m)
        else:
            assert copy_factor(copy["match"], scoring) == pytest.approx(scoring.reward.copy_min_factor), (name, copy)


def test_episodes_that_only_look_alike_keep_full_novelty(submit):
    """One place, one fixed camera, the same robot and task, different motions: an honest
    miner's 20 episodes are not copies of each other, nor of another miner's there."""
    from kibotos.scoring import copy_factor, load_scoring_config

    scoring = load_scoring_config()
    for i in range(20):
        result = submit(make_episode(get_robot(*PANDA), seed=2100 + i, miner_id="miner-fixed-cam", scene_seed=77))
        m = result.metrics
        assert result.passed, (i, m)
        assert copy_factor((m["copy"] or {}).get("match"), scoring) == 1.0, (i, m["copy"])
        assert m["s_novel"] >= 0.95 and m["same_miner_matches"] == 0, (i, m)
        if i:
            assert m["same_miner_candidates"] >= i  # every earlier one was compared
    other = submit(make_episode(get_robot(*PANDA), seed=2150, miner_id="miner-same-place", scene_seed=77))
    assert other.passed and other.metrics["copy"] is None and other.metrics["cross_miner_matches"] == 0
    assert other.metrics["s_novel"] >= 0.95


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_fresh_genuine_episodes_keep_a_high_novelty(submit, key):
    seed = 1500 + ROBOTS.index(key) * 10
    for s in range(seed, seed + 3):
        submit(episode(s, robot=key))
    for miner, s in ((ALICE, seed + 3), (BOB, seed + 4)):
        result = submit(episode(s, miner=miner, robot=key))
        m = result.metrics
        assert result.passed and m["applicable"]
        assert m["s_novel"] >= 0.9, m
        assert m["same_miner_matches"] == 0 and m["cross_miner_matches"] == 0
        assert m["same_miner_candidates" if miner == ALICE else "cross_miner_candidates"] >= 3


def count_rows(client, submission_id: str) -> int:
    return client.query("SELECT count() FROM kibotos.novelty_index FINAL WHERE submission_id = {s:String}",
                        parameters={"s": submission_id}).result_rows[0][0]


def test_redelivery_gives_the_same_answer_and_never_matches_itself(submit, client):
    base = episode(1600)
    submit(base)
    copy = perturb.copy_of(base, ALICE, video=perturb.mirror)
    first = submit(copy)
    assert first.metrics["same_miner_match"]["submission_id"] == sid(base)

    again = submit(copy)  # redelivered: a later clock, the same submission
    assert again == first
    # later submissions (another copy) do not change an earlier submission's answer
    submit(perturb.copy_of(base, ALICE, video=perturb.crop(0.9)))
    assert submit(copy) == first
    assert count_rows(client, sid(copy)) == 1

    # a crash between recording the fingerprint and storing the answer (or a new config):
    # re-assessed from the stored row at its original time, never against itself or later rows
    bumped = NoveltyChecker(client, CFG.model_copy(update={"config_version": "novelty-test-bumped"}))
    reassessed = submit(copy, check=bumped)
    assert reassessed.metrics["s_novel"] == first.metrics["s_novel"]
    assert reassessed.metrics["same_miner_match"] == first.metrics["same_miner_match"]
    assert reassessed.metrics["same_miner_candidates"] == first.metrics["same_miner_candidates"]
    assert reassessed.thresholds["config_version"] == "novelty-test-bumped"
    assert count_rows(client, sid(copy)) == 1

    # the first submission itself, redelivered, still matches nothing
    assert submit(base).metrics["same_miner_match"] is None


def test_windows_bound_what_is_compared(submit):
    t0 = 1_900_000_000_000
    base = episode(1700)
    submit(base, now_ms=t0)
    w = CFG.novelty.windows
    late_same = submit(perturb.copy_of(base, ALICE, video=perturb.crop(0.9)), now_ms=t0 + int((w.same_miner_days + 1) * DAY_MS))
    assert late_same.metrics["same_miner_match"] is None and late_same.metrics["s_novel"] == 1.0
    late_other = submit(perturb.copy_of(base, BOB, video=perturb.crop(0.9)), now_ms=t0 + int((w.global_days + 1) * DAY_MS))
    assert late_other.metrics["cross_miner_match"] is None
    inside = submit(perturb.copy_of(base, ALICE, video=perturb.mirror), now_ms=t0 + int((w.same_miner_days - 1) * DAY_MS))
    assert inside.metrics["same_miner_match"]["submission_id"] == sid(base)


def test_sql_similarities_agree_with_the_numpy_reference(submit, client):
    base = episode(1800)
    submit(base)
    copy = perturb.copy_of(base, ALICE, video=perturb.crop(0.85), joint_pos=perturb.noisy_trajectory(base, 0.05),
                           joint_vel=None)
    match = submit(copy).metrics["same_miner_match"]

    rows = client.query(
        "SELECT submission_id, traj_fingerprint, traj_joints, traj_len, motion, motion_len, motion_channels, "
        "motion_variants FROM kibotos.novelty_index FINAL WHERE submission_id IN ({a:String}, {b:String})",
        parameters={"a": sid(base), "b": sid(copy)}).result_rows
    stored = {r[0]: r for r in rows}
    q, c = stored[sid(copy)], stored[sid(base)]
    t = CFG.novelty.trajectory
    ref_traj = trajectory_corr(np.asarray(q[1], np.float32).reshape(q[2], q[3]),
                               np.asarray(c[1], np.float32).reshape(c[2], c[3]),
                               round(t.max_lag_s * t.rate_hz), t.min_samples, t.min_overlap_fraction)
    assert match["trajectory_corr"] == pytest.approx(ref_traj, abs=1e-4)

    mc = CFG.novelty.motion
    lag = round(mc.max_lag_s * CFG.novelty.frames.sample_fps)
    qm = [np.asarray(v, np.int8).reshape(q[5], q[6]) for v in q[4]]
    cm = [np.asarray(v, np.int8).reshape(c[5], c[6]) for v in c[4]]
    offsets = _spatial_offsets(mc.width, mc.shift_x, mc.shift_y)
    ref = {label: motion_corr(qm[i - 1], cm[j - 1], lag, mc.min_overlap_samples, mc.min_overlap_fraction, offsets)
           for i, j, label in _motion_pairs(list(q[7]))}
    best = max(ref, key=ref.get)
    assert match["motion_corr"] == pytest.approx(ref[best], abs=1e-4)
    assert match["motion_variant"] == best and best.startswith("crop")


def test_a_bundle_whose_video_cannot_be_read_is_judged_on_its_kinematics(submit):
    base = episode(1900)
    submit(base)
    result = submit(perturb.copy_of(base, ALICE, video_mp4=b"\x00\x00\x00\x18ftypisom-not-really-a-video"))
    assert "video_video_unreadable" in result.flags
    match = result.metrics["same_miner_match"]
    assert match["trajectory"] == 1.0 and match["motion_corr"] is None and match["embedding_cos"] is None
    assert result.metrics["s_novel"] <= 0.05 and result.passed  # not an exact copy: the video differs


def test_simulation_renders_are_fingerprinted_and_compared(checker, tmp_path):
    """Design §8: hashes of the simulation renders (the playback job's ``sim_phash``) are
    stored with the row and compared with the best earlier candidate's."""
    rng = np.random.default_rng(7)
    renders = [int(h) for h in rng.integers(0, 2**63, 8, dtype=np.int64)]
    original = episode(7100)
    copy = perturb.copy_of(original, BOB)
    other = perturb.copy_of(original, BOB)

    def check(ep, hashes):
        path = tmp_path / f"{uuid.uuid4().hex}.zarr.zip"
        ep.write(path)
        with open_bundle(path) as view:
            return checker.check(view, sid(ep), ep.manifest["miner_id"], next(_clock), sim_hashes=hashes)

    first = check(original, renders)
    assert "sim_render_match" not in first.metrics  # nothing earlier to compare with
    same_renders = check(copy, [h ^ 0b11 for h in renders])  # 2 bits off: the same images
    assert same_renders.metrics["sim_render_match"]["cross_miner"] == {
        "submission_id": sid(original), "fraction": 1.0, "renders": 8}
    unrelated = check(other, [int(h) for h in rng.integers(0, 2**63, 8, dtype=np.int64)])
    assert unrelated.metrics["sim_render_match"]["cross_miner"]["fraction"] < 0.5
