"""The operator's page over real HTTP against a running live loop: routes, headers, the token
matrix, traversal attempts, the privacy switch, bounded clients, many viewers, and a real
headless Chromium that must show the picture and the tracks and see them update."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser import Browser, chromium_path

from edgefer.apps.live import LiveOptions, LiveSession
from edgefer.apps.web.server import SECURITY_HEADERS, HttpOptions
from edgefer.apps.window import DisplayOptions
from edgefer.capture import CaptureOptions
from edgefer.errors import ConfigError
from edgefer.llm.config import LlmConfig
from edgefer.pipeline import RecognizerOptions

TOKEN = "s3cret-token-for-tests"
ROUTES = ("/", "/static/app.js", "/static/style.css", "/api/status", "/metrics", "/frame.jpg")


@contextlib.contextmanager
def running(clip: Path, llm: LlmConfig | None = None, **http: object) -> Iterator[LiveSession]:
    """A headless live loop on the looped demo clip, serving the page; stopped on exit."""
    options = LiveOptions(capture=CaptureOptions(str(clip), realtime=True, loop=True),
                          recognizer=RecognizerOptions(llm=llm), display=DisplayOptions(headless=True),
                          http=HttpOptions(enabled=True, port=0, **http), duration_s=120)
    session = LiveSession(options)
    runner = threading.Thread(target=session.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while session.stats.frames < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session.monitor.server is not None and session.stats.frames >= 3
        yield session
    finally:
        session.request_stop()
        runner.join(timeout=30)


def get(session: LiveSession, path: str, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One raw request to 127.0.0.1 (the path is sent exactly as given, not normalised)."""
    connection = http.client.HTTPConnection("127.0.0.1", session.monitor.server.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def wait_for(session: LiveSession, condition, timeout_s: float = 30) -> dict:
    """/api/status once ``condition(document)`` holds (the demo face comes and goes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        document = json.loads(get(session, "/api/status")[2])
        if condition(document) or time.monotonic() > deadline:
            return document
        time.sleep(0.2)


@pytest.fixture(scope="module")
def open_page(demo_clip) -> Iterator[LiveSession]:
    with running(demo_clip, preview=True) as session:
        yield session


def test_routes_serve_the_page_status_and_picture(open_page):
    status, headers, body = get(open_page, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script src="/static/app.js"' in body and b"<script>" not in body  # no inline JS
    status, headers, body = get(open_page, "/static/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    status, _, body = get(open_page, "/api/status")
    document = json.loads(body)
    assert status == 200 and document["frames"] >= 3 and document["preview"] is True
    assert document["source"]["state"] == "connected" and document["llm"] is None
    tracks = wait_for(open_page, lambda d: d["tracks"])["tracks"]
    assert {"track_id", "label", "confidence", "from_llm", "llm_label"} == set(tracks[0])
    status, headers, body = get(open_page, "/frame.jpg?after=0")
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert image.shape == (480, 640, 3) and int(headers["X-Frame-Seq"]) >= 1
    assert get(open_page, "/healthz")[0] == 200
    status, _, body = get(open_page, "/metrics")
    assert status == 200 and b"edgefer_frames_total" in body


@pytest.mark.parametrize("path", [*ROUTES, "/healthz", "/nope"])
def test_every_response_carries_the_security_headers(open_page, path):
    _, headers, _ = get(open_page, path)
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("path", [
    "/static/", "/static", "/static/../server.py", "/static/..%2fserver.py",
    "/static/%2e%2e/%2e%2e/live.py", "/../../../../etc/passwd", "//etc/passwd",
    "/static/app.js/..", "/index.html", "/static/index.html/", "/web/static/app.js",
    "/%2e%2e/apps/live.py", "/static/app.js%00.png", "/static//app.js",
])
def test_no_listing_and_no_traversal(open_page, path):
    status, _, body = get(open_page, path)
    assert status == 404 and b"import" not in body and b"root:" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_only_get_and_head_are_served(open_page, method):
    status, headers, _ = get(open_page, "/api/status", method=method)
    assert status == 405 and headers["X-Frame-Options"] == "DENY"
    assert headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/nope"])
def test_head_answers_as_get_without_the_body(open_page, path):
    status, headers, body = get(open_page, path)
    head_status, head_headers, head_body = get(open_page, path, method="HEAD")
    assert head_status == status and head_body == b""
    assert head_headers["Content-Type"] == headers["Content-Type"]
    assert int(head_headers["Content-Length"]) == len(body)


def test_a_probe_may_ask_for_health_with_head(open_page):
    status, headers, body = get(open_page, "/healthz", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_frames_are_encoded_once_per_interval_for_any_number_of_viewers(open_page):
    """Eight viewers poll as fast as they can while the loop runs; the loop keeps producing
    frames, every viewer gets pictures, and the encoder never exceeds its rate."""
    preview = open_page.monitor.preview
    frames_before, encoded_before = open_page.stats.frames, preview.encoded
    received = [0] * 8
    statuses: set[int] = set()
    stop = threading.Event()

    def viewer(slot: int) -> None:
        seq = 0
        while not stop.is_set():
            status, headers, _ = get(open_page, f"/frame.jpg?after={seq}")
            statuses.add(status)
            if status == 200:
                seq = int(headers["X-Frame-Seq"])
                received[slot] += 1
            statuses.add(get(open_page, "/api/status")[0])

    started = time.monotonic()
    threads = [threading.Thread(target=viewer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    elapsed = time.monotonic() - started
    assert open_page.stats.frames > frames_before  # the loop kept producing frames
    assert all(count >= 1 for count in received) and statuses <= {200, 204}
    encoded = preview.encoded - encoded_before
    assert encoded <= elapsed / preview.interval_s + 2  # the cap holds whatever the demand


def test_clients_beyond_the_bound_get_503_and_are_counted(demo_clip):
    with running(demo_clip, preview=True, max_clients=2) as session:
        statuses: set[int] = set()
        holders: list[threading.Thread] = []
        deadline = time.monotonic() + 60  # a guard for a busy machine; usually the first round
        while 503 not in statuses and time.monotonic() < deadline:
            round_ = [threading.Thread(target=get, args=(session, "/frame.jpg?after=999999"))
                      for _ in range(2)]  # each holds a slot 2 s for a frame that never comes
            for holder in round_:
                holder.start()
            holders += round_
            until = time.monotonic() + 1.5
            while 503 not in statuses and time.monotonic() < until:
                statuses.add(get(session, "/api/status")[0])
                if 503 in statuses:
                    assert get(session, "/healthz")[0] == 200  # probes are never turned away
        assert 503 in statuses
        for holder in holders:
            holder.join(timeout=10)
        _, _, metrics = get(session, "/metrics")
        assert b'edgefer_http_refused_total{reason="busy"}' in metrics


def test_without_preview_the_page_shows_everything_but_pixels(demo_clip):
    with running(demo_clip) as session:
        assert get(session, "/frame.jpg?after=0")[0] == 404
        assert json.loads(get(session, "/api/status")[2])["preview"] is False
        assert get(session, "/")[0] == 200
        assert session.monitor.preview is None  # nothing is ever encoded


def test_token_matrix_on_all_interfaces(demo_clip, monkeypatch):
    """Bound to 0.0.0.0 with a token, reached through 127.0.0.1: every route but /healthz
    refuses a missing or wrong token (401, counted) and serves the right one (header or cookie)."""
    monkeypatch.setenv("EDGEFER_TEST_TOKEN", TOKEN)
    with running(demo_clip, host="0.0.0.0", token_env="EDGEFER_TEST_TOKEN", preview=True) as session:
        refused = 0
        for path in ROUTES:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "edgefer_token=x"},
                            {"Authorization": f"Bearer {TOKEN}x"}):
                status, reply_headers, _ = get(session, path, headers)
                assert status == 401, (path, headers)
                assert reply_headers["X-Frame-Options"] == "DENY"
                refused += 1
            assert get(session, path, {"Authorization": f"Bearer {TOKEN}"})[0] == 200, path
            assert get(session, path, {"Authorization": f"bearer {TOKEN}"})[0] == 200, path
            assert get(session, path, {"Cookie": f"other=1; edgefer_token={TOKEN}"})[0] == 200
        assert get(session, "/healthz")[0] == 200
        status, headers, _ = get(session, f"/?token={TOKEN}")
        assert status == 303 and headers["Location"] == "/"
        assert headers["Set-Cookie"].startswith(f"edgefer_token={TOKEN};")
        assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        status, headers, body = get(session, "/?token=wrong")
        assert status == 401 and b"/?token=TOKEN" in body and headers["Server"] == "edgefer"
        # a wrong token in the address never replaces the good cookie that let the request in
        status, headers, _ = get(session, "/?token=wrong", {"Cookie": f"edgefer_token={TOKEN}"})
        assert status == 303 and headers["Location"] == "/" and "Set-Cookie" not in headers
        _, _, metrics = get(session, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
        line = next(x for x in metrics.decode().splitlines()
                    if x.startswith('edgefer_http_refused_total{reason="token"}'))
        assert float(line.split()[1]) == refused + 1


@pytest.mark.parametrize(("http", "environ", "match"), [
    ({"host": "0.0.0.0"}, {}, "http.token_env"),
    ({"host": "192.168.1.20"}, {}, "insecure_no_token"),
    ({"host": "edgefer.local"}, {}, "http.token_env"),
    ({"token_env": "EDGEFER_UNSET_TOKEN"}, {}, "EDGEFER_UNSET_TOKEN"),
    ({"token_env": "EDGEFER_EMPTY_TOKEN"}, {"EDGEFER_EMPTY_TOKEN": ""}, "EDGEFER_EMPTY_TOKEN"),
    ({"token_env": "EDGEFER_ODD_TOKEN"}, {"EDGEFER_ODD_TOKEN": "a b;c"}, "may hold only"),
])
def test_reachable_address_without_token_is_a_configuration_error(monkeypatch, http, environ, match):
    monkeypatch.delenv("EDGEFER_UNSET_TOKEN", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    options = LiveOptions(display=DisplayOptions(headless=True),
                          http=HttpOptions(enabled=True, **http))
    with pytest.raises(ConfigError, match=match):
        LiveSession(options)


def test_explicit_opt_out_allows_an_open_address():
    options = LiveOptions(display=DisplayOptions(headless=True),
                          http=HttpOptions(enabled=True, host="0.0.0.0", insecure_no_token=True))
    assert LiveSession(options).monitor.enabled


def test_kiosk_on_open_address_without_token_exits_2(tmp_path):
    from conftest import run_cli

    config = tmp_path / "k.toml"
    config.write_text("[display]\nheadless = true\n[http]\nhost = '0.0.0.0'\n")
    result = run_cli("kiosk", "--config", str(config), "--duration", "1")
    assert result.returncode == 2 and "http.token_env" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_llm_status_and_answers_reach_the_page(demo_clip, tmp_path):
    """The page shows the LLM's answers and counters; the daily budget left counts today's
    requests of earlier runs too (kept in the answer cache, as the budget itself counts them)."""
    from edgefer.llm.budget import utc_day
    from edgefer.llm.cache import AnswerCache
    from tools.openai_stub import StubServer, StubState

    earlier = AnswerCache(tmp_path / "answers.sqlite")
    for _ in range(10):
        earlier.count_request(utc_day())
    earlier.close()
    with StubServer(StubState(answer=lambda face: "surprise")) as server:
        llm = LlmConfig(model="stub", base_url=server.base_url, threshold=1.0, cooldown_s=0.5,
                        batch_wait_s=0.05, requests_per_day=1000,
                        cache_path=str(tmp_path / "answers.sqlite"))
        with running(demo_clip, llm=llm) as session:
            document = wait_for(session, lambda d: d["llm"] and d["llm"]["answered"] >= 1
                                and any(t["from_llm"] for t in d["tracks"]))
    llm_status = document["llm"]
    assert llm_status["answered"] >= 1 and llm_status["failed_requests"] == 0
    assert 0 < llm_status["budget_left_today"] <= 1000 - 10 - 1 and "queue" in llm_status
    answered = [t for t in document["tracks"] if t["from_llm"]]
    assert answered and answered[0]["label"] == "surprise" == answered[0]["llm_label"]
    assert any(e["event"] == "llm_answer" for e in document["events"])


def test_source_credentials_never_reach_the_page():
    from edgefer.sources import redact

    assert redact("rtsp://admin:hunter2@10.0.0.5:554/stream?key=abc") == "rtsp://10.0.0.5:554/stream"
    assert redact("0") == "0"


# The picture's width sampled every 2 ms while the page swaps in the next 5 frames (or for 15 s).
WIDTHS_OVER_NEXT_FRAMES = """new Promise((done) => {
  const image = document.getElementById('frame');
  const last = Number(image.dataset.seq) + 5;
  const widths = new Set();
  const started = performance.now();
  const timer = setInterval(() => {
    widths.add(image.naturalWidth);
    if (Number(image.dataset.seq) >= last || performance.now() - started > 15000) {
      clearInterval(timer);
      done([...widths]);
    }
  }, 2);
})"""


@pytest.mark.skipif(chromium_path() is None, reason="needs chromium (Debian package chromium)")
def test_browser_shows_the_picture_and_tracks_and_they_update(demo_clip, tmp_path):
    """A real headless Chromium loads the page; from its DOM: the status updates, the picture
    is replaced by newer frames without going blank in between, and the track list shows faces.
    Screenshots go to $EDGEFER_SCREENSHOTS when set."""
    shots = Path(os.environ["EDGEFER_SCREENSHOTS"]) if os.environ.get("EDGEFER_SCREENSHOTS") \
        else None
    with running(demo_clip, preview=True) as session, Browser(tmp_path / "profile") as browser:
        tab = browser.open(f"http://127.0.0.1:{session.monitor.server.port}/")
        first = browser.wait_for(tab, "document.getElementById('frame').dataset.seq", 30)
        later = browser.wait_for(
            tab, f"Number(document.getElementById('frame').dataset.seq) > {first or 0} && "
                 "Number(document.body.dataset.updates) >= 3 && "
                 "document.querySelectorAll('#tracks li[data-track]').length", 30)
        assert first and later, "the picture or the track list never updated"
        shown = browser.evaluate(tab, "[!document.getElementById('frame').hidden, "
                                      "document.getElementById('frame').naturalWidth, "
                                      "document.querySelector('#tracks li[data-track] .label')"
                                      ".textContent]")
        assert shown[0] and shown[1] == 640 and shown[2] in {
            "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
        widths = browser.evaluate(tab, WIDTHS_OVER_NEXT_FRAMES)
        assert widths == [640], f"the picture went blank while a new frame loaded: {widths}"
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
            browser.screenshot(tab, shots / "page.png")


def test_an_outage_shows_no_live_faces_and_says_why(monkeypatch):
    """While the source reconnects, the last frame's faces and frame rate are not shown as
    live: the status has no tracks and 0 frames/s, the preview is the outage's message."""
    from edgefer.apps.web import status
    from edgefer.apps.web.preview import PreviewEncoder
    from edgefer.apps.web.status import Published, SourceStatus, StatusBoard
    from edgefer.types import Faces, Frame, FrameResult

    faces = Faces(np.array([[10, 10, 50, 50]], np.float32), np.ones(1), np.zeros((1, 6, 2)))
    faces.track_ids[0], faces.probs[0, 3] = 1, 1.0
    frame = Frame(0, 0.0, np.full((120, 160, 3), 200, np.uint8), "cam")
    board = StatusBoard("rtsp://user:pw@127.0.0.1/cam", preview=True)
    board.publish(Published(FrameResult(frame, faces), 1, 30.0, 5.0))
    board.set_source(SourceStatus("connected"))
    assert board.snapshot()["tracks"] and board.snapshot()["fps"] == 30.0
    monkeypatch.setattr(status, "CURRENT_S", 0.0)  # the last frame is now old
    board.set_source(SourceStatus("reconnecting", reconnects=1))
    snapshot = board.snapshot()
    assert snapshot["tracks"] == [] and snapshot["fps"] == 0.0 and snapshot["frames"] == 1
    assert board.unavailable() == "camera unavailable: rtsp://127.0.0.1/cam (reconnecting)"
    with PreviewEncoder(board, fps=10) as preview:
        _, jpeg = preview.frame_after(0, timeout_s=10)
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (480, 640, 3) and picture.mean() < 20  # the black message screen
