"""``kibotos demo``: the whole pipeline on the embedded stack, end to end.

Generates a realistic mix of submissions from several miners (genuine and faulty,
three robot models, a copy farmer re-submitting perturbed copies of other miners' episodes, and a video
swapper pairing a genuine trajectory with another episode's video), each miner with its own Ed25519 keypair; every bundle is signed
(``<bundle>.sig.json``) and uploaded through the stack's ingest API (presigned PUT, then
complete). The demo waits for every verdict, then prints each submission's verdict, its
soft score components, S and the reward it earned, and the miners' balances — read back from ClickHouse. Uploads the ingest edge refuses
show up too: rejected with a reason code at ``ingest_integrity`` (a truncated upload, a
bundle modified after signing, one signed by an impostor, an unsigned one), or refused
at the door without a verdict (a replay of an accepted bundle).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpu_consumers.registry import EVIDENCE_GATES
from kibotos import warehouse
from kibotos.bundle.hashtree import hash_bundle
from kibotos.config.settings import Settings
from kibotos.datasets.demo_step import print_demo_dataset, publish_demo_dataset
from kibotos.errors import ServiceError
from kibotos.identity import Keypair, sidecar_path, sign_bundle, sign_tree
from kibotos.ingest.client import IngestClient
from kibotos.robots import get_robot, list_robots
from kibotos.runtime.stack import Stack
from kibotos.synthetic import perturb
from kibotos.synthetic.samples import make_episode
from streams.verdict_feed import follow_verdicts

if TYPE_CHECKING:
    from kibotos.ingest.server import IngestServer
    from kibotos.warehouse import LockedClient

# (miner, robot model id, variant, seed): an honest miner, a careless one, a cheater
MIX = [
    ("miner-alice", "franka_panda", "genuine", 1),
    ("miner-alice", "unitree_g1", "genuine", 2),
    ("miner-alice", "ur5", "genuine", 3),
    ("miner-alice", "franka_panda", "genuine", 4),
    # honest but noisy: 0.02 rad (about 1 degree) of white joint noise passes every hard
    # gate and costs S_retarget instead (kibotos.synthetic.perturb.with_joint_noise)
    ("miner-alice", "unitree_g1", "noisy:0.02", 23),
    ("miner-bob", "ur5", "genuine", 5),
    ("miner-bob", "franka_panda", "nan", 6),
    ("miner-bob", "unitree_g1", "gap", 7),
    ("miner-bob", "ur5", "degrees", 8),
    ("miner-carol", "ur5", "sync_lie", 0),
    ("miner-carol", "unitree_g1", "teleport", 10),
    ("miner-carol", "ur5", "jerk", 11),
    ("miner-carol", "franka_panda", "limit_violation", 12),
    ("miner-carol", "unitree_g1", "flatline", 13),
    # passes gates A-E; the IK residual job (GPU consumer) catches the faked object stream
    ("miner-carol", "franka_panda", "ik_target_shift", 19),
    # moves like a genuine episode, but the object never leaves the table: task rejects it
    ("miner-carol", "franka_panda", "task_failed", 20),
    # a copy farmer: other miners' accepted episodes (same robot and seed), "slightly
    # perturbed" and re-submitted as new: rejected (copied_submission) or paid the copy
    # factor (at most a tenth of the original's reward), so it ends with near-zero points
    ("miner-erin", "franka_panda", "copy:reencoded", 4),   # alice's Panda episode
    ("miner-erin", "franka_panda", "copy:mirrored", 4),
    ("miner-erin", "ur5", "copy:brightened", 5),           # bob's UR5 episode
    # a video swapper: a genuine trajectory paired with another episode's video of the same
    # task; the align job finds its frames at the shuffled baseline (video_kinematics_mismatch)
    ("miner-frank", "ur5", "video_swapped", 22),
]

# "copy:<name>" variants: the genuine episode of the same robot and seed (whoever uploaded
# it: the sample depends on robot and seed only), re-submitted as new after one of these
# (kibotos.synthetic.perturb)
COPIES: dict[str, dict[str, Any]] = {
    "reencoded": dict(crf=35),
    "mirrored": dict(video=perturb.mirror),
    "brightened": dict(video=perturb.brightness(30)),
}


def demo_keypair(miner: str) -> Keypair:
    """The demo miner's keypair: derived from its name, so miner ids are stable across runs."""
    return Keypair.from_seed(hashlib.sha256(f"kibotos-demo-miner:{miner}".encode()).digest())


def _revision(model_id: str) -> str:
    return next(rev for m, rev in list_robots() if m == model_id)


def generate(out: Path, console: Console, mix=MIX, hostile: bool = True) -> list[tuple[str, str, Path]]:
    out.mkdir(parents=True, exist_ok=True)
    items = []
    with Progress(TextColumn("generating samples"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("gen", total=len(mix) + 5)
        for miner, model_id, variant, seed in mix:
            path = _episode(out, miner, model_id, variant, seed)
            sign_bundle(path, demo_keypair(miner))
            items.append((miner, variant, path))
            progress.advance(task)
        if not hostile:
            return items
        # a truncated upload: signed whole, then only half of the bytes were sent
        dave = _episode(out, "miner-dave", "franka_panda", "genuine", 14)
        sign_bundle(dave, demo_keypair("miner-dave"))
        broken = out / "miner-dave-truncated.zarr.zip"
        broken.write_bytes(dave.read_bytes()[: dave.stat().st_size // 2])
        sidecar_path(dave).rename(sidecar_path(broken))
        dave.unlink()
        items.append(("miner-dave", "truncated", broken))
        progress.advance(task)
        items.extend(_hostile(out, progress, task))
    return items


def _episode(out: Path, miner: str, model_id: str, variant: str, seed: int, *, manifest_miner: str | None = None,
             submission_id: str | None = None, name: str | None = None) -> Path:
    miner_id = manifest_miner or demo_keypair(miner).miner_id
    if variant.startswith("copy:"):
        original = make_episode(get_robot(model_id, _revision(model_id)), "genuine", seed=seed, miner_id=miner_id)
        ep = perturb.copy_of(original, miner_id, **COPIES[variant.split(":", 1)[1]])
    elif variant.startswith("noisy:"):  # "noisy:<rad>": a genuine episode with that joint noise
        genuine = make_episode(get_robot(model_id, _revision(model_id)), "genuine", seed=seed, miner_id=miner_id)
        ep = perturb.with_joint_noise(genuine, float(variant.split(":", 1)[1]))
    else:
        ep = make_episode(get_robot(model_id, _revision(model_id)), variant, seed=seed, miner_id=miner_id)
    if submission_id:
        ep = replace(ep, manifest=ep.manifest | {"submission_id": submission_id})
    return ep.write(out / (name or f"{miner}-{model_id}-{variant.replace(':', '-')}-{seed}.zarr.zip"))


def _hostile(out: Path, progress: Progress, task) -> list[tuple[str, str, Path]]:
    """Mallory's attempts: each must be refused at ingestion with a reason code."""
    mallory = demo_keypair("miner-mallory")
    # modified after signing: the signed Merkle root no longer matches the bytes
    tampered = _episode(out, "miner-mallory", "ur5", "genuine", 15)
    sig = sign_bundle(tampered, mallory)
    tampered.unlink()  # same manifest, other trajectories and video
    _episode(out, "miner-mallory", "ur5", "genuine", 16, submission_id=str(sig.submission_id), name=tampered.name)
    progress.advance(task)
    # an impostor: the manifest claims alice, mallory signs it
    forged = _episode(out, "miner-mallory", "franka_panda", "genuine", 17,
                      manifest_miner=demo_keypair("miner-alice").miner_id)
    sidecar_path(forged).write_text(sign_tree(hash_bundle(forged), _sid(forged), mallory).model_dump_json())
    progress.advance(task)
    # unsigned: no sidecar at all
    unsigned = _episode(out, "miner-mallory", "unitree_g1", "genuine", 18)
    progress.advance(task)
    return [("miner-mallory", "tampered", tampered), ("miner-mallory", "impersonation", forged),
            ("miner-mallory", "unsigned", unsigned)]


def _sid(path: Path) -> str:
    from kibotos.bundle import open_bundle

    with open_bundle(path) as view:
        return str(view.manifest.submission_id)


def upload_all(client: IngestClient, items: list[tuple[str, str, Path]]):
    """Upload each bundle as its miner; ``(verdicts expected {sid: (miner, variant)},
    refused without a verdict [(miner, variant, outcome)])``."""
    judged: dict[str, tuple[str, str]] = {}
    refused = []
    for miner, variant, path in items:
        out = client.submit(path, demo_keypair(miner), sign=False) if sidecar_path(path).exists() else \
            _submit_unsigned(client, path, demo_keypair(miner))
        if out.accepted or out.status == 422:  # 422: rejected at ingestion, with a verdict
            judged[out.submission_id] = (miner, variant)
        else:
            refused.append((miner, variant, out))
    return judged, refused


def _submit_unsigned(client: IngestClient, path: Path, keypair: Keypair):
    from kibotos.ingest.client import IngestRefused, SubmitOutcome

    sid = _sid(path)
    try:
        grant = client.request_upload(keypair, path, sid)
        client.put(grant, path)
        done = client.complete(grant, None)
        return SubmitOutcome(path, done["submission_id"], True)
    except IngestRefused as exc:
        return SubmitOutcome(path, sid, False, exc.reason_code, str(exc), exc.status)


COMPONENT_LABELS = {"pose": "pose", "retarget": "ret", "align": "align", "task": "task", "object": "obj",
                    "novel": "novel"}


def score_cells(report: dict) -> list[str]:
    """The report's soft components (in ``COMPONENT_LABELS`` order) and S, as table cells:
    '-' for a missing component, blank for an unscored (rejected) submission."""
    scores = report.get("scores")
    if not isinstance(scores, dict):
        return [""] * (len(COMPONENT_LABELS) + 1)
    comps = {c.get("name"): c for c in scores.get("components") or []}
    cells = []
    for name in COMPONENT_LABELS:
        value = (comps.get(name) or {}).get("value")
        cells.append("-" if value is None else f"{value:.2f}")
    return cells + [f"{scores.get('score', 0.0):.2f}"]


def evidence_summary(report: dict) -> str:
    """One line of the expensive evidence a report carries (pose / IK / playback / task /
    novelty)."""
    gates = {g["gate"]: g for g in report.get("gates") or []}
    parts = []
    if (pose := gates.get(EVIDENCE_GATES["pose"])) is not None:
        m = pose["metrics"]
        parts.append(f"pose {m.get('mean_keypoint_confidence') or 0:.2f}" if m.get("applicable") else "pose n/a (robot video)")
    if (ik := gates.get(EVIDENCE_GATES["ik"])) is not None:
        m = ik["metrics"]
        parts.append(f"IK rms {100 * m['rms_pos_error_m']:.1f} cm" if "rms_pos_error_m" in m else "IK n/a")
    if (pb := gates.get(EVIDENCE_GATES["playback"])) is not None:
        m = pb["metrics"]
        parts.append(f"{len(m.get('keyframes') or [])} keyframes, IoU {m.get('mean_silhouette_iou') or 0:.2f}")
    if (task := gates.get(EVIDENCE_GATES["task"])) is not None:
        m = task["metrics"]
        if m.get("applicable") is False:
            parts.append("task n/a")
        elif m.get("checklist_fraction") is not None:
            parts.append(f"task {m.get('task_id')} {100 * m['checklist_fraction']:.0f}%")
    if (nov := gates.get("novelty")) is not None:
        flags = set(nov.get("flags") or [])
        if "exact_duplicate" in flags or "same_miner_near_duplicate" in flags:
            parts.append("copy of own earlier upload")
        elif "cross_miner_near_duplicate" in flags:
            parts.append("copy of another miner's upload")
        elif "cross_miner_later_copy" in flags:
            parts.append("copied by another miner's later upload")
        if "revised_after_original" in flags:
            parts.append("revised once its original was checked")
    return " · ".join(parts)


def run_demo(settings: Settings, console: Console, workers: int = 1, timeout_s: float = 900, mix=MIX,
             hostile: bool = True, xgen: bool = True) -> int:
    home = settings.home / "demo"
    if home.exists():
        shutil.rmtree(home)
    settings = settings.model_copy(update={"home": home})
    console.rule("[bold]Kibotos demo")
    items = generate(home / "samples", console, mix, hostile)
    console.print(f"{len(items)} submissions from {len({m for m, _, _ in items})} miners written to {home / 'samples'}")
    console.print(f"evidence jobs after gate E: {', '.join(settings.evidence_jobs) or 'none'} "
                  "(a cold Genesis scene build per robot takes ~20 s on CPU)")
    with Stack(settings, workers=workers, log=lambda m: console.print(f"[dim]{m}[/dim]")) as stack, \
            IngestClient(cast("IngestServer", stack.ingest).url) as client:  # ingest, client: set by start()
        # copies go up once the originals are judged: a copier works from published
        # uploads, so in this story the copy never races its original (kibotos.novelty
        # says what happens when it does)
        originals = [item for item in items if not item[1].startswith("copy:")]
        copies = [item for item in items if item[1].startswith("copy:")]
        variants, refused = upload_all(client, originals)
        # a replay: alice uploads her first bundle again after it was accepted
        first = next((item for item in items if item[0] == "miner-alice"), None)
        if first is not None:
            refused.extend(upload_all(client, [(first[0], "replay", first[2])])[1])
        console.print(f"uploaded {len(originals) + (first is not None)} bundles through the ingest API "
                      f"{cast('IngestServer', stack.ingest).url}" + (f"; {len(copies)} copies follow once they are judged" if copies else ""))
        # XGen: a human demonstration video turned into G1 clips, alongside the bundles
        xgen_request = None
        if xgen and settings.xgen_jobs:
            from kibotos.xgen.demo import submit_demo_request

            xgen_request = submit_demo_request(client, demo_keypair("miner-xavier"), home / "xgen", console)
        verdicts: dict[str, dict] = {}
        deadline = time.monotonic() + timeout_s
        with Progress(TextColumn("waiting for verdicts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("verdicts", total=len(variants) + len(copies))

            def done() -> bool:
                stack.check_workers()
                if time.monotonic() > deadline:
                    raise ServiceError(f"timed out after {timeout_s:.0f}s with {len(verdicts)}/{len(variants)} verdicts")
                if copies and len(verdicts) >= len(variants):  # the originals are judged: the copies go up
                    more, more_refused = upload_all(client, copies)
                    variants.update(more)
                    refused.extend(more_refused)
                    progress.update(task, total=len(variants))
                    progress.console.print(f"uploaded {len(copies)} copies")
                    copies.clear()
                return not copies and len(verdicts) >= len(variants)

            for verdict in follow_verdicts(cast(str, stack.bootstrap), stack.catalogue, stop=done):
                if verdict["submission_id"] in variants and verdict["submission_id"] not in verdicts:
                    verdicts[verdict["submission_id"]] = verdict
                    progress.update(task, completed=len(verdicts))
        # the sink writes in batches: wait until every report is in the warehouse
        while True:
            # uploads refused at ingestion are judged per attempt, in upload_verdicts
            n = cast("LockedClient", stack.client).query(
                "SELECT uniqExact(submission_id) FROM (SELECT submission_id FROM "
                "kibotos.verification_reports FINAL UNION ALL SELECT submission_id FROM "
                "kibotos.upload_verdicts FINAL)").result_rows[0][0]
            if n >= len(variants) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        reports = {sid: warehouse.get_report(stack.client, sid) for sid in variants}
        xgen_status = None
        if xgen_request is not None:
            from kibotos.xgen.demo import show_demo_request

            xgen_status = show_demo_request(client, xgen_request, console, max(60.0, deadline - time.monotonic()))
        # the accepted episodes become a published, exported, attributed dataset version
        dataset = publish_demo_dataset(stack, console)
        balances = warehouse.balances(stack.client)

    table = Table(title="verdicts (read back from ClickHouse)")
    for col in ("submission", "miner", "sample", "verdict", "reason", "gate", "evidence"):
        table.add_column(col)
    for col in COMPONENT_LABELS.values():
        table.add_column(col, justify="right")
    for col in ("S", "reward"):
        table.add_column(col, justify="right")
    for sid, (miner, variant) in sorted(variants.items(), key=lambda kv: (kv[1][0], kv[1][1])):
        rep = reports.get(sid) or {}
        verdict = rep.get("verdict", "missing")
        colour = "green" if verdict == "accepted" else "red"
        table.add_row(sid[:8], miner, variant, f"[{colour}]{verdict}[/{colour}]", rep.get("reason_code") or "",
                      rep.get("failed_gate") or "", evidence_summary(rep), *score_cells(rep),
                      f"{rep.get('points', 0):.1f}")
    console.print(table)
    console.print("[dim]S components in [0,1] (design §7; '-' = no evidence, scored by the missing policy): "
                  "pose quality, retargeting (IK residual, smoothness, limit margins), sim/video alignment, "
                  "task completion, object consistency, novelty. reward = R_base + R_scale * f(S).[/dim]")
    if refused:
        door = Table(title="refused at the ingest API without a verdict")
        for col in ("miner", "sample", "HTTP", "reason", "detail"):
            door.add_column(col)
        for miner, variant, out in refused:
            door.add_row(miner, variant, str(out.status), out.reason_code or "", out.detail[:70])
        console.print(door)
    names = {demo_keypair(m).miner_id: m for m, _, _ in items}
    bal = Table(title="ledger balances")
    for col in ("miner", "miner id (base58 Ed25519 public key)", "points", "entries"):
        bal.add_column(col)
    for row in balances:
        bal.add_row(names.get(row["miner_id"], "?"), row["miner_id"], f"{row['points']:.1f}", str(row["entries"]))
    console.print(bal)
    print_demo_dataset(console, dataset, names)
    console.print(f"reports and ledger persist in {home}; e.g. "
                  f"KIBOTOS_HOME={home} kibotos report {next(iter(variants))}")
    missing = [sid for sid in variants if not reports.get(sid)]
    if xgen_request is not None and (xgen_status or {}).get("state") != "done":
        missing.append(f"xgen:{xgen_request}")
    return 1 if missing else 0
