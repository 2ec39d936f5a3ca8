import numpy as np
import pytest

from kibotos.xgen import g1
from kibotos.xgen.interaction import CONTACT_PAIRS, Hold, box_bottom, box_trajectory, face_distances, interact, run
from kibotos.xgen.phases import PHASE_ID, PHASES
from kibotos.xgen.retarget import RobotMotion

HELD = [PHASE_ID[p] for p in ("grasp", "lift", "carry", "place")]


def test_phases_follow_the_ground_truth(pickup, clip):
    order = [p for i, p in enumerate(clip.phase) if i == 0 or p != clip.phase[i - 1]]
    assert order == list(range(len(PHASES)))
    def first(ph, pid):
        return int(np.nonzero(ph == pid)[0][0])

    for pid in range(1, len(PHASES)):
        assert abs(first(clip.phase, pid) - first(pickup.phase, pid)) <= 3  # 0.1 s at 30 fps


def test_palms_on_the_box_faces_while_grasping(clip):
    held = np.isin(clip.phase, HELD)
    dist = face_distances(g1.Kin(), clip.qpos, clip.object_pose, clip.anchors)
    assert dist[held].max() < 0.02
    # opposite faces, palms facing into the box
    _, normals = g1.Kin().palms(clip.qpos[held])
    assert (np.sum(normals[:, 0] * normals[:, 1], axis=1) < -0.9).all()
    assert clip.contact[held][:, :2].all() and not clip.contact[~held][:, :2].any()


def test_box_never_in_the_ground_or_the_torso(clip):
    assert box_bottom(clip.object_pose, clip.box_size).min() >= -0.01
    clearance = g1.Kin().box_torso_distance(clip.qpos, clip.object_pose, clip.box_size)
    assert clearance.min() >= 0.0


def test_box_moves_only_while_held_or_falling(clip):
    held = np.isin(clip.phase, HELD)
    step = np.linalg.norm(np.diff(clip.object_pose, axis=0), axis=1)
    airborne = box_bottom(clip.object_pose, clip.box_size) > 1e-3
    free = ~held[1:] & ~held[:-1]
    assert (step[free & ~airborne[:-1]] < 1e-9).all()
    assert clip.object_pose[:, 2].max() - clip.object_pose[0, 2] > 0.3  # it was lifted
    assert clip.contact[~held, CONTACT_PAIRS.index(("box", "ground"))].all()


def test_box_released_in_the_air_falls_and_lands_flat():
    n, fps = 40, 30.0
    palms = np.zeros((n, 2, 3))
    palms[:, 0, 1], palms[:, 1, 1] = 0.1, -0.1
    palms[:, :, 2] = np.linspace(0.1, 0.6, n)[:, None]
    size = np.array([0.2, 0.2, 0.2])
    rest = np.array([0.0, 0.0, 0.1, 1.0, 0.0, 0.0, 0.0])
    box = box_trajectory(palms, Hold(start=0, lift=1, carry=10, place=15, end=19), rest, size, fps, 9.81)
    z = box[:, 2]
    assert z[19] > 0.3
    fall = z[20:]
    assert (np.diff(fall) <= 0).all() and fall[-1] == pytest.approx(0.1)
    k = 3  # free fall: z drops by g t^2 / 2
    assert z[19] - z[19 + k] == pytest.approx(0.5 * 9.81 * (k / fps) ** 2, abs=1e-6)


def test_annotation_sets_the_hold(robot_motion, xcfg, clip):
    ts, te = clip.hold.start / robot_motion.fps, clip.hold.end / robot_motion.fps
    annotated, _ = interact(robot_motion, xcfg, {"ts": ts, "te": te, "anchor": "palms"})
    assert annotated.hold.start == clip.hold.start and annotated.hold.end == clip.hold.end
    assert annotated.annotation["anchor"] == "palms"


def test_no_hold_is_a_reason_code(robot_motion, xcfg):
    walking = RobotMotion(qpos=robot_motion.qpos[:20], fps=robot_motion.fps, residual=robot_motion.residual[:20],
                          planted=robot_motion.planted[:20])
    result = run(walking, xcfg)
    assert not result.ok and result.reason_code == "xgen_no_grasp"


def test_refining_the_grasp_keeps_the_feet_planted(robot_motion, clip):
    from tests.kibotos.xgen.helpers import planted_drift

    soles = g1.Kin().sole_points(clip.qpos)
    assert soles[..., 2].min() > -1e-3
    assert np.abs(soles[..., 2].min(axis=(1, 2))).max() < 5e-3
    assert planted_drift(soles.mean(axis=2)[..., :2], robot_motion.planted) < 0.02


def test_a_hold_released_mid_carry_keeps_its_phases_in_order(xcfg):
    from kibotos.xgen.interaction import phases, segment

    n, fps = 60, 30.0
    qpos = np.tile(g1.home_qpos(), (n, 1))
    palms = np.zeros((n, 2, 3))
    palms[:, :, 0] = 0.35  # ahead of the pelvis
    palms[:, 0, 1], palms[:, 1, 1] = 0.12, -0.12
    # the palms close in from above (trimmed from the hold), grasp, lift, and the left hand
    # lets go three frames after the box reached its top
    palms[:, :, 2] = np.concatenate([np.linspace(0.3, 0.2, 6), np.full(14, 0.2), np.linspace(0.2, 0.7, 15),
                                     np.full(25, 0.7)])[:, None]
    palms[37:, 0, 1] = 0.5
    hold = segment(qpos, palms, fps, xcfg.interaction)
    assert 0 < hold.start <= hold.lift <= hold.carry <= hold.place <= hold.end < 37
    assert hold.carry == 34  # the first frame within lift_threshold of the top
    ph = phases(n, hold)
    assert (np.diff(ph) >= 0).all()


@pytest.mark.parametrize("annotation", [{"ts": "soon", "te": 2.0}, {"ts": 2.0}, {"ts": 2.0, "te": 1.0},
                                        {"ts": float("nan"), "te": 1.0}])
def test_bad_annotation_is_a_reason_code(robot_motion, xcfg, annotation):
    result = run(robot_motion, xcfg, annotation)
    assert not result.ok and result.reason_code == "xgen_annotation_invalid"
