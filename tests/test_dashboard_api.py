"""The dashboard's JSON API over a workspace trained by the worker's own code: every route's
answer checked against the state database, bad requests named, controls queued, and every
route refused without the token when one is set."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from swapd.dashboard.server import DashboardServer
from swapd.state import StateStore
from tests.browser import Reply, http_get, post_json
from tests.dashboard_support import TrainedWorkspace

TOKEN = "k3Yq-9vTzR2mWb7xLpA4"
API = "/api/v1"


@pytest.fixture(scope="module")
def served(trained_ws: TrainedWorkspace) -> Iterator[str]:
    with DashboardServer(trained_ws.workspace, port=0) as server:
        yield server.url


def get(url: str, path: str) -> Reply:
    reply = http_get(url, path)
    assert reply.headers["Content-Type"].startswith("application/json"), (path, reply.body)
    return reply


def test_jobs_losses_sessions_problems(served: str, trained_ws: TrainedWorkspace) -> None:
    jobs = get(served, f"{API}/jobs").json()["jobs"]
    assert [j["name"] for j in jobs] == ["tiny"]
    job = jobs[0]
    assert {k: job[k] for k in ("kind", "state", "iteration", "target", "error")} == {
        "kind": "train", "state": "stopped", "iteration": 12, "target": 400, "error": None}
    assert job["egs"] > 0 and job["schedule"]["state"] == "always"
    assert job["eta_seconds"] is None  # not training: no ETA

    rows = get(served, f"{API}/jobs/tiny/losses").json()["losses"]
    assert [r["iteration"] for r in rows] == list(range(1, 13))
    later = get(served, f"{API}/jobs/tiny/losses?since=8").json()["losses"]
    assert [r["iteration"] for r in later] == [9, 10, 11, 12] and later == rows[8:]
    store = StateStore(trained_ws.workspace.state_db, readonly=True)
    try:
        stored = {r[0]: (r[2], r[3]) for r in store.iter_losses("tiny")}
        assert all((r["loss_a"], r["loss_b"]) == stored[r["iteration"]] for r in rows)
        assert set(rows[-1]["components"]["a"]) == {"ssim", "mae", "eyes", "mouth"}
        problems = get(served, f"{API}/problems").json()["problems"]
        assert len(problems) == len(store.problems())
        sessions = get(served, f"{API}/jobs/tiny/sessions").json()["sessions"]
        assert len(sessions) == len(store.sessions("tiny"))
    finally:
        store.close()
    detail = get(served, f"{API}/jobs/tiny").json()
    assert detail["file"] == "jobs/tiny.toml" and "snapshot_every = 4" in detail["file_text"]
    assert [s["iteration"] for s in detail["restore"]["snapshots"]] == [4, 8, 12]

    losses_csv = http_get(served, f"{API}/jobs/tiny/losses.csv")
    assert losses_csv.status == 200 and losses_csv.headers["Content-Type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(losses_csv.body.decode())))
    assert table[0][:4] == ["iteration", "time", "loss_a", "loss_b"] and len(table) == 13
    sessions_csv = http_get(served, f"{API}/jobs/tiny/sessions.csv")
    assert sessions_csv.status == 200 and sessions_csv.body.startswith(b"start,end,")


def test_snapshots_and_their_faces(served: str, trained_ws: TrainedWorkspace) -> None:
    snapshots = get(served, f"{API}/jobs/tiny/snapshots").json()["snapshots"]
    assert [s["iteration"] for s in snapshots] == trained_ws.snapshots
    n = trained_ws.faces_per_side
    assert all(s["faces"] == {"a": n, "b": n} and s["time"] for s in snapshots)

    store = StateStore(trained_ws.workspace.state_db, readonly=True)
    try:
        rows = {r["face"]: r for r in store.tracked_faces("tiny", 12, "a", "face", limit=1000)}
        earlier = {r["face"]: r for r in store.tracked_faces("tiny", 8, "a", "face", limit=1000)}
    finally:
        store.close()
    assert snapshots[-1]["mean_loss"]["a"] == pytest.approx(
        sum(r["loss"] for r in rows.values()) / n)

    base = f"{API}/jobs/tiny/snapshots/12/faces"
    worst = get(served, f"{base}?side=a&sort=-loss&limit=10").json()
    assert worst["total"] == n and len(worst["faces"]) == 10 and worst["compare_to"] == 8
    losses = [f["loss"] for f in worst["faces"]]
    assert losses == sorted((r["loss"] for r in rows.values()), reverse=True)[:10]
    face = worst["faces"][0]
    assert face["delta"] == pytest.approx(face["loss"] - earlier[face["name"]]["loss"])
    assert (face["yaw"], face["pitch"]) == (rows[face["name"]]["yaw"], rows[face["name"]]["pitch"])
    for kind in ("face", "output", "swap"):
        image = http_get(served, face[kind])
        assert image.status == 200 and image.body[8:12] == b"WEBP", kind

    # every order the tracker offers, against the stored values
    for sort, key, reverse in (("loss", "loss", False), ("yaw", "yaw", False),
                               ("pitch", "pitch", False), ("delta", "delta", False),
                               ("-delta", "delta", True), ("name", "name", False)):
        listed = get(served, f"{base}?side=a&sort={sort}&limit=500").json()["faces"]
        values = [f[key] for f in listed]
        assert values == sorted(values, reverse=reverse), sort
    paged = [f["name"] for offset in range(0, n, 7) for f in get(
        served, f"{base}?side=a&sort=name&offset={offset}&limit=7").json()["faces"]]
    assert paged == sorted(rows)

    # a yaw x pitch cell: exactly the faces whose pose lies in it
    cells = get(served, f"{API}/jobs/tiny/snapshots/12/cells?side=a").json()
    assert sum(map(sum, cells["count"])) + cells["unknown"] == n
    row, col = max(((r, c) for r, line in enumerate(cells["count"]) for c, _ in enumerate(line)),
                   key=lambda rc: cells["count"][rc[0]][rc[1]])
    yaw, pitch = cells["yaw"][col], cells["pitch"][row]
    inside = get(served, f"{base}?side=a&yaw={yaw},{yaw + 10}&pitch={pitch},{pitch + 10}"
                         f"&limit=500").json()
    expected = {name for name, r in rows.items() if r["yaw"] is not None
                and yaw <= r["yaw"] < yaw + 10 and pitch <= r["pitch"] < pitch + 10}
    assert {f["name"] for f in inside["faces"]} == expected
    assert inside["total"] == len(expected) == cells["count"][row][col]

    b_side = get(served, f"{base}?side=b&limit=3").json()["faces"]
    assert all(f["swap"] is None and f["output"] for f in b_side)

    timeline = get(served, f"{API}/jobs/tiny/faces/a/{quote(face['name'])}/timeline").json()
    assert [s["iteration"] for s in timeline["snapshots"]] == trained_ws.snapshots
    assert timeline["snapshots"][-1]["loss"] == face["loss"]

    compared = get(served, f"{API}/jobs/tiny/compare?first=4&second=12").json()
    side = compared["sides"]["a"]
    assert side["faces"] == n and side["better"] + side["worse"] <= n
    assert side["mean_second"] == pytest.approx(snapshots[-1]["mean_loss"]["a"])


@pytest.mark.parametrize(("path", "status", "needle"), [
    ("/jobs/nobody", 404, "no job"),
    ("/jobs/nobody/losses", 404, "no job"),
    ("/jobs/tiny/snapshots/5/faces", 404, "no snapshot"),
    ("/jobs/tiny/faces/a/nobody.png/timeline", 404, "nobody.png"),
    ("/jobs/tiny/snapshots/12/faces?side=c", 400, "side"),
    ("/jobs/tiny/snapshots/12/faces?sort=size", 400, "sort"),
    ("/jobs/tiny/snapshots/12/faces?yaw=10", 400, "yaw"),
    ("/jobs/tiny/snapshots/12/faces?yaw=20,10", 400, "LO must be below HI"),
    ("/jobs/tiny/snapshots/12/faces?limit=0", 400, "limit"),
    ("/jobs/tiny/snapshots/12/faces?offset=x", 400, "offset"),
    ("/jobs/tiny/faces/c/x/timeline", 400, "side"),
])
def test_bad_requests_are_named(served: str, path: str, status: int, needle: str) -> None:
    reply = get(served, API + path)
    assert reply.status == status and needle in reply.json()["error"], reply.body


def test_controls_are_queued_checked_and_same_origin(trained_ws: TrainedWorkspace,
                                                     tmp_path: Path) -> None:
    copy = trained_ws.copy(tmp_path / "ws")
    store = StateStore(copy.workspace.state_db, readonly=True)
    with DashboardServer(copy.workspace, port=0) as server:
        url, path = server.url, f"{API}/jobs/tiny/controls"
        assert post_json(url, path, {"action": "pause"}).status == 202
        restore = post_json(url, path, {"action": "restore", "snapshot": 8})
        assert restore.status == 202, restore.body
        assert post_json(url, path, {"action": "restore"}).status == 202  # the backup
        focus = post_json(url, path, {"action": "focus", "side": "a",
                                      "faces": ["x.png", "y.png"]})
        assert focus.status == 202
        refused = {
            "jump": (400, "action must be one of"),
            "restore-9": (404, "no snapshot at iteration 9 (have: 4, 8, 12)"),
            "focus-side": (400, "side must be a or b"),
            "focus-faces": (400, "faces must be a list"),
        }
        bodies = {"jump": {"action": "jump"}, "restore-9": {"action": "restore", "snapshot": 9},
                  "focus-side": {"action": "focus", "side": "c", "faces": ["x.png"]},
                  "focus-faces": {"action": "focus", "side": "a", "faces": "x.png"}}
        for name, body in bodies.items():
            reply = post_json(url, path, body)
            assert (reply.status, refused[name][1] in reply.json()["error"]) == (
                refused[name][0], True), (name, reply.body)
        assert post_json(url, f"{API}/jobs/nobody/controls", {"action": "pause"}).status == 404
        not_json = http_get(url, path, {"Content-Type": "text/plain"}, "POST", b"pause")
        assert not_json.status == 400
        # a page on another site cannot press a control; the dashboard's own origin can
        cross = post_json(url, path, {"action": "stop"}, {"Origin": "http://evil.example"})
        assert cross.status == 403
        own = post_json(url, path, {"action": "save"}, {"Origin": url.rstrip("/")})
        assert own.status == 202
        listed = http_get(url, path).json()["controls"]
    try:
        requests = store.control_requests("tiny")
        assert [(r.action, r.args) for r in reversed(requests)] == [
            ("pause", {}), ("restore", {"snapshot": 8}), ("restore", {"backup": True}),
            ("focus", {"side": "a", "faces": 2, "focus": True}), ("save", {})]
        assert [c["action"] for c in listed] == [r.action for r in requests]
        assert store.focus_faces("tiny") == {"a": {"x.png", "y.png"}, "b": set()}
    finally:
        store.close()


def test_no_database_yet_answers_503(tmp_path: Path) -> None:
    from swapd.workspace import Workspace

    with DashboardServer(Workspace.open(tmp_path / "empty"), port=0) as server:
        reply = http_get(server.url, f"{API}/jobs")
        assert reply.status == 503 and "waiting for the service" in reply.json()["error"]


def test_every_route_needs_the_token(trained_ws: TrainedWorkspace) -> None:
    ws = trained_ws.workspace
    preview = next((ws.previews_dir("tiny")).glob("*.png"))
    file_path = f"/files/{ws.relative(preview)}"
    thumb = f"/thumbs/alice/{next(ws.face_set('alice').glob('*.png')).name}?s=64"
    with DashboardServer(ws, host="0.0.0.0", port=0, token=TOKEN) as server:
        url = server.url
        gets = [f"{API}/jobs", f"{API}/jobs/tiny/snapshots", f"{API}/jobs/tiny/losses.csv",
                "/_dash-layout", "/_dash-dependencies", file_path, thumb, "/",
                "/jobs/tiny/tracker"]
        for path in gets:
            reply = http_get(url, path)
            assert reply.status == 401, path
            assert b"tiny" not in reply.body and b"RIFF" not in reply.body
        for path in ("/_dash-update-component", f"{API}/jobs/tiny/controls"):
            assert http_get(url, path, method="POST", body=b"{}").status == 401, path
            # a ?token= never authenticates a POST
            assert http_get(url, f"{path}?token={TOKEN}", method="POST",
                            body=b"{}").status == 401, path
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for path in gets:
            assert http_get(url, path, bearer).status == 200, path
        assert post_json(url, f"{API}/jobs/tiny/controls", {"action": "x"}, bearer).status == 400
        # a browser without the token is sent to the login page, which sets the cookie
        browser = http_get(url, "/jobs/tiny/tracker?side=b", {"Accept": "text/html"})
        assert browser.status == 303
        assert browser.headers["Location"] == "/login?next=%2Fjobs%2Ftiny%2Ftracker%3Fside%3Db"
        assert http_get(url, "/login").status == 200
        wrong = http_get(url, "/login", {"Content-Type": "application/x-www-form-urlencoded"},
                         "POST", b"token=nope&next=/")
        assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
        login = http_get(url, "/login", {"Content-Type": "application/x-www-form-urlencoded"},
                         "POST", f"token={TOKEN}&next=https://evil.example/".encode())
        assert login.status == 303 and login.headers["Location"] == "/"  # never off-site
        cookie = {"Cookie": login.headers["Set-Cookie"].split(";")[0]}
        assert "HttpOnly" in login.headers["Set-Cookie"]
        assert http_get(url, f"{API}/jobs", cookie).status == 200


def test_without_a_token_only_loopback_host_names_are_answered(served: str) -> None:
    assert http_get(served, f"{API}/jobs", {"Host": "localhost"}).status == 200
    rebound = http_get(served, f"{API}/jobs", {"Host": "evil.example:8050"})
    assert rebound.status == 403 and b"tiny" not in rebound.body


def test_a_faces_source_frame_opens_when_the_footage_is_in_the_workspace(
        trained_ws: TrainedWorkspace, synthetic_clip: Path, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from swapd.state import FaceRecord

    copy = trained_ws.copy(tmp_path / "ws")
    ws = copy.workspace
    store = StateStore(ws.state_db)
    image_face = store.faces("alice")[0]
    (ws.footage / "frames").mkdir(parents=True)
    frame = np.full((90, 120, 3), (30, 60, 200), np.uint8)
    assert cv2.imwrite(str(ws.footage / "frames" / image_face.source), frame)
    shutil.copy(synthetic_clip, ws.footage / "clip.mp4")
    # faces cut from a video: swapd's names count frames from 0, faceswap's from 1
    store.index_faces([FaceRecord("alice", "v0.png", "ok", 1, 1, source="clip_000010"),
                       FaceRecord("alice", "v1.png", "ok", 1, 1, source="clip_000011.png"),
                       FaceRecord("alice", "gone.png", "ok", 1, 1, source="elsewhere_1.png")],
                      set_name="alice")
    store.close()
    with DashboardServer(ws, port=0) as server:
        timeline = get(server.url, f"{API}/jobs/tiny/faces/a/{quote(image_face.name)}/timeline")
        assert timeline.json()["source_frame"] == f"/frames/alice/{image_face.name}"
        shown = http_get(server.url, timeline.json()["source_frame"])
        assert shown.status == 200 and shown.headers["Content-Type"] == "image/jpeg"
        decoded = cv2.imdecode(np.frombuffer(shown.body, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == (90, 120, 3)
        from_video = [http_get(server.url, f"/frames/alice/{name}") for name in ("v0.png",
                                                                                  "v1.png")]
        assert all(r.status == 200 for r in from_video)
        assert from_video[0].body == from_video[1].body  # frame 10, counted two ways
        assert http_get(server.url, "/frames/alice/gone.png").status == 404
        assert http_get(server.url, "/frames/alice/nobody.png").status == 404


def test_a_faces_training_mask_is_shown(trained_ws: TrainedWorkspace, tmp_path: Path) -> None:
    """A DeepFaceLab user's XSeg mask is what the face trains with: the timeline says so, and
    the faces page counts each set's masks."""
    import dataclasses

    from swapd.dashboard import components

    copy = trained_ws.copy(tmp_path / "ws")
    store = StateStore(copy.workspace.state_db)
    faces = store.faces("alice")
    masked = dataclasses.replace(faces[0], mask_source="xseg")
    store.index_faces([masked], set_name="alice")
    counts = store.mask_source_counts("alice")
    store.close()
    assert counts == {"xseg": 1, "landmarks": len(faces) - 1}
    assert components.mask_counts(counts) == (
        f"1 XSeg mask (DeepFaceLab), {len(faces) - 1:,} landmark hull")
    with DashboardServer(copy.workspace, port=0) as server:
        shown = {face.name: get(server.url, f"{API}/jobs/tiny/faces/a/{quote(face.name)}"
                                            "/timeline").json()["mask"] for face in faces[:2]}
    assert shown == {faces[0].name: "xseg", faces[1].name: "landmarks"}
