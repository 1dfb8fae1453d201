"""The dashboard in real headless Chromium (Debian's package) driven by Playwright, with Chromium's
fake camera and microphone, against the real server with the small test models."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import msgpack
import pytest

from .helpers import REPO, live_server, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")

FLAGS = [
    "--use-fake-device-for-media-stream",  # a synthetic camera picture and a beeping microphone
    "--use-fake-ui-for-media-stream",  # grant camera and microphone without asking
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def playwright() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright) -> Iterator:
    launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
    yield launched
    launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, errors


IMAGE_VERSION_2 = (
    """() => document.querySelector('.label-set[data-modality="image"] .version').textContent"""
    """.includes('version 2')"""
)

VALUES = [
    None, True, False, 0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**52,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1,
    1.5, -0.25, 1e300, "", "a", "é" * 20, "x" * 40, "y" * 300, "z" * 70000,
    [1, [2, [3]]], list(range(20)), {"a": 1, "b": [True, None]}, {f"k{i}": i for i in range(20)},
    {"type": "frame", "seq": 7, "ts": 1.25, "format": "jpeg", "stream": "camera"},
]  # fmt: skip


def test_msgpack_codec_matches_python(page, server):
    page.goto(f"{server.http}/")
    page.wait_for_function("window.sensorium !== undefined")
    encoded = page.evaluate(
        """async (values) => {
            const { encode } = await import('/static/msgpack.js');
            return values.map((v) => Array.from(encode(v)));
        }""",
        VALUES,
    )
    for value, data in zip(VALUES, encoded, strict=True):
        assert bytes(data) == msgpack.packb(value, use_bin_type=True), value
    binary = [b"", b"\x00\xff" * 10, bytes(range(256)) * 300]
    python_packed = [list(msgpack.packb(v, use_bin_type=True)) for v in [*VALUES, *binary]]
    decoded = page.evaluate(
        """async (packed) => {
            const { decode, encode } = await import('/static/msgpack.js');
            return packed.map((bytes) => {
                const value = decode(new Uint8Array(bytes));
                if (!(value instanceof Uint8Array)) return value;
                return { bin: Array.from(value), again: Array.from(encode(value)) };
            });
        }""",
        python_packed,
    )
    for value, got in zip([*VALUES, *binary], decoded, strict=True):
        if isinstance(value, bytes):
            assert bytes(got["bin"]) == value and bytes(got["again"]) == msgpack.packb(value, use_bin_type=True)
        else:
            assert got == json.loads(json.dumps(value)), value
    python_floats = page.evaluate(
        "async (b) => (await import('/static/msgpack.js')).decode(new Uint8Array(b))",
        list(msgpack.packb({"f32": 0.5, "u64": 2**40}, use_single_float=True)),
    )
    assert python_floats == {"f32": 0.5, "u64": 2**40}


def start_devices(page) -> None:
    page.click("#camera-toggle")
    page.click("#mic-toggle")


def test_live_results_latency_and_label_reload(page, server, label_dir):
    page.goto(f"{server.http}/")
    page.wait_for_selector("#connection.open")
    start_devices(page)
    page.wait_for_function("window.sensorium.lastResult.image !== null", timeout=30_000)
    page.wait_for_function("window.sensorium.lastResult.audio !== null", timeout=30_000)
    assert page.locator("#image-top .bar").count() == 5
    assert page.locator("#audio-top .bar").count() == 5
    assert "cos" in page.inner_text("#image-top")
    page.wait_for_function("window.sensorium.latency.image.length >= 3 && window.sensorium.latency.audio.length >= 1")
    assert "p50" in page.inner_text("#image-percentiles")
    assert page.inner_text("#overlay").strip()
    assert "version 1" in page.inner_text('.label-set[data-modality="image"] .version')
    assert page.locator('.label-set[data-modality="image"] textarea').evaluate("t => t.readOnly")

    (label_dir / "image.txt").write_text("lighthouse\nwindmill\nsubmarine\n")
    page.wait_for_function(
        IMAGE_VERSION_2,
        timeout=10_000,
    )
    page.wait_for_function("window.sensorium.lastResult.image.labels_version === 2", timeout=10_000)
    shown = set(page.locator("#image-top .bar .name").all_inner_texts())
    assert shown == {"lighthouse", "windmill", "submarine"}
    assert "reloaded" in page.inner_text("#label-notice")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


def test_editing_labels_from_the_page(page, settings, label_dir):
    with live_server(replace(settings, allow_label_edits=True)) as server:
        page.goto(f"{server.http}/")
        page.wait_for_selector("#connection.open")
        editor = page.locator('.label-set[data-modality="image"] textarea')
        page.wait_for_function(
            """() => !document.querySelector('.label-set[data-modality="image"] textarea').readOnly"""
        )
        editor.fill("# edited in the page\nred kite\nblue whale\n")
        page.click('.label-set[data-modality="image"] .save')
        page.wait_for_function(
            IMAGE_VERSION_2,
            timeout=10_000,
        )
        assert (label_dir / "image.txt").read_text() == "# edited in the page\nred kite\nblue whale\n"
        page.click("#camera-toggle")
        page.wait_for_function(
            "window.sensorium.lastResult.image && window.sensorium.lastResult.image.labels_version === 2"
        )
        labels = {t["label"] for t in page.evaluate("window.sensorium.lastResult.image.top")}
        assert labels == {"red kite", "blue whale"}
        editor.fill("@template no placeholder\nowl\n")  # a bad edit is refused, and said so
        page.click('.label-set[data-modality="image"] .save')
        page.wait_for_function("document.querySelector('#label-notice').textContent.includes('not saved')")
        assert "red kite" in (label_dir / "image.txt").read_text()


def test_read_only_without_the_flag_and_denied_devices(playwright, server):
    # Without --use-fake-ui-for-media-stream nobody answers the permission prompt: access is denied.
    flags = [flag for flag in FLAGS if flag != "--use-fake-ui-for-media-stream"]
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
    page = browser.new_page()
    page.goto(f"{server.http}/")
    page.wait_for_selector("#connection.open")
    assert "--allow-label-edits" in page.inner_text("#edit-note")
    assert page.request.put(f"{server.http}/v1/labels/image", data="x\n").status == 403
    page.click("#camera-toggle")
    page.wait_for_selector("#camera-message:not([hidden])")
    assert "denied" in page.inner_text("#camera-message")
    browser.close()


def test_the_page_reconnects_after_a_server_restart(browser, settings):
    from .helpers import LiveServer, free_port

    port = free_port()
    first = LiveServer(settings, port=port)
    first.start()
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector("#connection.open")
    first.stop()
    page.wait_for_selector("#connection.closed", timeout=10_000)
    second = LiveServer(settings, port=port)
    second.start()
    try:
        page.wait_for_selector("#connection.open", timeout=15_000)
        # the page watches again: the new server lists the page's own camera once it streams
        page.click("#camera-toggle")
        page.wait_for_selector(".stream-card.own[data-stream=camera]", timeout=15_000)
        assert page.get_attribute(".stream-card.own", "data-client") == str(page.evaluate("window.sensorium.clientId"))
    finally:
        context.close()
        second.stop()


def test_served_offline_from_the_package(server):
    page = httpx.get(f"{server.http}/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for name in ("app.js", "msgpack.js", "worklet.js", "style.css", "watch.js", "timeline.js", "demo.js"):
        assert httpx.get(f"{server.http}/static/{name}").status_code == 200
    assert "http" not in "".join(
        line
        for line in (Path(__file__).parent.parent / "server/static/index.html").read_text().splitlines()
        if "src=" in line or "href=" in line
    ), "no CDN: every asset is served by the server itself"


# --- refusals, double starts, a decaying rate, label failures, errors of other streams -----------


def connection_text(page) -> str:
    return page.inner_text("#connection")


def test_a_refused_token_is_said_and_not_retried(page, settings):
    with live_server(replace(settings, token="sesame")) as server:
        attempts: list[str] = []
        page.on("websocket", lambda ws: attempts.append(ws.url))
        page.goto(f"{server.http}/")
        page.wait_for_function(
            "document.querySelector('#connection').textContent.includes('the server wants a token')", timeout=10_000
        )
        assert "/?token=" in connection_text(page) and "reconnecting" not in connection_text(page)
        page.wait_for_timeout(2_500)  # an absence is only seen by watching: backoff would retry 3 times by now
        assert len(attempts) == 1, attempts
        page.goto(f"{server.http}/?token=sesame")  # the hint is right: with the token it connects
        page.wait_for_selector("#connection.open")
        page.wait_for_selector("#stream-cards .empty")  # its watch, with the token, was answered
        page.wait_for_function("window.sensorium.eventLog !== 'not loaded'")
        assert page.evaluate("window.sensorium.eventLog") in ("loaded", "off")  # not refused
        assert page.evaluate("window.sensorium.refused") is None


def test_a_refused_origin_is_said_and_not_retried_but_other_closes_are(page, server):
    attempts: list[str] = []

    def refuse(ws) -> None:
        attempts.append(ws.url)
        if len(attempts) == 1:
            ws.close(code=1013, reason="the server is full")  # try again later: the page does
        else:
            ws.close(code=4403, reason="origin http://elsewhere.test is not allowed")

    page.route_web_socket("**/ws", refuse)
    page.goto(f"{server.http}/")
    page.wait_for_function(
        "document.querySelector('#connection').textContent.includes(\"this page's origin is not allowed\")",
        timeout=10_000,
    )
    assert "elsewhere.test" in connection_text(page) and "reconnecting" not in connection_text(page)
    page.wait_for_timeout(2_500)  # an absence is only seen by watching: backoff would retry 3 times by now
    assert len(attempts) == 2, attempts


GET_USER_MEDIA_SPY = """
// Counts getUserMedia calls and holds every answer until the test opens the gate: both clicks of a
// double-click land while the device is still opening, however fast this machine is.
let openGate;
window.media = { video: 0, audio: 0, streams: [], gate: new Promise((resolve) => { openGate = resolve; }) };
window.media.open = () => openGate();
const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  window.media[constraints.video ? "video" : "audio"] += 1;
  await window.media.gate;
  const stream = await getUserMedia(constraints);
  window.media.streams.push(stream);
  return stream;
};
"""

ALL_TRACKS_ENDED = "window.media.streams.every((s) => s.getTracks().every((t) => t.readyState === 'ended'))"


def test_a_double_click_starts_one_camera_and_one_microphone(page, server):
    page.add_init_script(GET_USER_MEDIA_SPY)
    page.goto(f"{server.http}/")
    page.wait_for_selector("#connection.open")
    page.dblclick("#camera-toggle")
    page.dblclick("#mic-toggle")
    assert page.evaluate("[window.media.video, window.media.audio]") == [1, 1]
    assert page.is_disabled("#camera-toggle") and page.is_disabled("#mic-toggle")  # while starting
    page.evaluate("window.media.open()")
    page.wait_for_function(
        "document.querySelector('#camera-toggle').textContent === 'Stop camera'"
        " && document.querySelector('#mic-toggle').textContent === 'Stop microphone'",
        timeout=15_000,
    )
    assert page.evaluate("[window.media.video, window.media.audio, window.media.streams.length]") == [1, 1, 2]
    page.wait_for_function("window.sensorium.lastResult.image !== null", timeout=30_000)
    page.click("#camera-toggle")
    page.click("#mic-toggle")
    page.wait_for_function(ALL_TRACKS_ENDED)  # nothing left capturing once both are stopped


CAMERA_RATE = "parseFloat(document.querySelector('#camera-stats').textContent)"


def test_the_result_rate_decays_to_zero_when_results_stop(page, server):
    page.goto(f"{server.http}/")
    page.wait_for_selector("#connection.open")
    page.click("#camera-toggle")
    page.wait_for_function(f"{CAMERA_RATE} > 0", timeout=30_000)
    page.click("#camera-toggle")
    page.wait_for_function(f"{CAMERA_RATE} === 0", timeout=10_000)
    assert "0.0 results/s" in page.inner_text("#camera-stats")


def test_a_failed_label_load_is_shown_not_thrown(page, settings):
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "Uncaught" in m.text else None)
    failure = {"kind": "no token"}

    def labels(route) -> None:
        if failure["kind"] == "no token":  # the real server's 401: the request without the page's token
            headers = {k: v for k, v in route.request.headers.items() if k.lower() != "authorization"}
            route.continue_(headers=headers)
        elif failure["kind"] == "proxy":
            route.fulfill(status=502, content_type="text/html", body="<h1>Bad Gateway</h1>")
        else:
            route.abort("connectionrefused")

    page.route("**/v1/labels", labels)
    with live_server(replace(settings, token="sesame")) as server:
        for kind, shown in [("no token", "token"), ("proxy", "502"), ("network", "")]:
            failure["kind"] = kind
            page.goto(f"{server.http}/?token=sesame")
            page.wait_for_selector("#connection.open")
            page.wait_for_function(
                "document.querySelector('#label-notice').textContent.includes('labels not loaded')", timeout=5_000
            )
            assert shown in page.inner_text("#label-notice"), kind
            assert "error" in page.get_attribute("#label-notice", "class")
    assert not problems, problems


def test_only_errors_for_the_camera_stream_free_its_frames(page, server):
    routes = []

    def fake_server(ws) -> None:
        routes.append(ws)
        ws.send(
            msgpack.packb(
                {
                    "type": "welcome", "protocol": 1, "server": "sensorium/fake",
                    "modalities": {"image": {"model": "fake", "labels_version": 1, "label_count": 3}},
                    "limits": {},
                }
            )
        )  # fmt: skip

    page.route_web_socket("**/ws", fake_server)
    page.goto(f"{server.http}/")
    page.wait_for_selector("#connection.open")
    page.click("#camera-toggle")
    page.wait_for_function("window.sensorium.camera.inFlight.size === 2", timeout=15_000)  # nobody answers
    first, second = page.evaluate("[...window.sensorium.camera.inFlight.keys()]")

    def error(seq: int, **where: str) -> None:
        routes[-1].send(msgpack.packb({"type": "error", "code": "bad_audio", "message": "test", "seq": seq, **where}))

    error(second, modality="audio", stream="mic")  # the microphone's chunk with the same number
    error(second, modality="image", stream="another-camera")
    error(second)  # not known to be the camera's
    error(first, modality="image", stream="camera")
    page.wait_for_function(f"!window.sensorium.camera.inFlight.has({first})")  # handled in order: all four seen
    assert page.evaluate(f"window.sensorium.camera.inFlight.has({second})")


# --- watching every stream of the server ---------------------------------------------------------------

SENSORIUM = shutil.which("sensorium") or str(Path(sys.executable).parent / "sensorium")

# A few labels in two groups, and event settings low enough that the slideshow's scene changes start
# events for certain (z of 0.5 over each label's own baseline, no minimum time).
WATCH_LABELS = """@events start=0.5 end=0 min=0 hold=0
@group animals
cat
dog
@group things
cup of coffee
rocket
astronaut
"""
WATCH_NAMES = {"cat", "dog", "cup of coffee", "rocket", "astronaut", "any animals", "any things"}


def looped_slideshow(path: Path, times: int) -> Path:
    """samples/slideshow.mp4 played ``times`` over, so the second client streams for as long as the test needs."""
    import cv2

    capture = cv2.VideoCapture(str(REPO / "samples" / "slideshow.mp4"))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (width, height))
    for _ in range(times):
        for image in frames:
            writer.write(image)
    writer.release()
    return path


def stream_card(name: str) -> str:
    return f".stream-card[data-stream='{name}']"


def test_the_page_watches_every_stream_with_an_event_timeline(page, settings, label_dir, tmp_path):
    (label_dir / "image.txt").write_text(WATCH_LABELS)
    video = looped_slideshow(tmp_path / "slideshow-looped.mp4", times=5)  # 30 s at 10 fps: ended by the test
    with live_server(settings) as server:
        page.set_viewport_size({"width": 1280, "height": 860})  # a laptop's screen
        page.goto(f"{server.http}/")
        page.wait_for_selector("#connection.open")
        page.click("#camera-toggle")  # the page's own stream, listed as its own
        page.wait_for_selector(".stream-card.own[data-stream=camera]", timeout=30_000)
        own = page.evaluate("window.sensorium.clientId")
        assert "this page" in page.inner_text(".stream-card.own")

        webcam = subprocess.Popen(
            [SENSORIUM, "webcam", "--source", str(video), "--headless", "--url", server.ws, "--stream", "doorcam",
             "--fps", "10"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            card = stream_card("doorcam")
            page.wait_for_selector(f"{card} img.thumb[src^='blob:']", timeout=30_000)
            page.wait_for_selector(f"{card} .top .label", timeout=30_000)
            client = page.get_attribute(card, "data-client")
            assert client != str(own) and f"client {client}" in page.inner_text(card)
            assert "this page" not in page.inner_text(card)
            shown = set(page.locator(f"{card} .top .label").all_inner_texts())
            assert shown and shown <= WATCH_NAMES, shown
            # the thumbnail is a real JPEG the server sent: it decodes to a picture
            page.wait_for_function(f'document.querySelector("{card} img.thumb").naturalWidth > 0')

            # an event of the other client's stream shows on the timeline, in a row of its label
            row = f".tl-stream[data-stream=doorcam][data-client='{client}'] .tl-row"
            page.wait_for_selector(f"{row} .tl-bar", timeout=30_000)
            rows = set(page.locator(f"{row}:not(.tl-axis)").evaluate_all("rows => rows.map((r) => r.dataset.label)"))
            assert rows and rows <= WATCH_NAMES, rows
            page.wait_for_function("document.querySelector('#event-list').textContent.includes('doorcam')")
            # and one that ended while the stream goes on: its start and end paired into one bar
            page.wait_for_selector(f"{row} .tl-bar:not(.open)", timeout=30_000)
            page.select_option("#timeline-minutes", "1")
            page.wait_for_selector(".stream-card.own[data-stream=camera] img.thumb[src^='blob:']")
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(REPO / "docs" / "dashboard.png"))
        finally:
            webcam.terminate()
            webcam.wait(timeout=15)

        # the client went away: its card goes, its events end, and its rows stay on the timeline
        page.wait_for_selector(card, state="detached", timeout=15_000)
        ended = f".tl-stream.ended[data-stream=doorcam][data-client='{client}']"
        page.wait_for_selector(ended)
        page.wait_for_function(f'!document.querySelector("{ended} .tl-bar.open")')
        assert page.locator(".stream-card.own[data-stream=camera]").count() == 1

        # a page opened later finds the ended stream's events in the server's event log
        logged = f"{server.http}/v1/events?stream=doorcam&limit=1000"
        wait_until(lambda: any(e["state"] == "end" for e in httpx.get(logged).json()["events"]), what="logged ends")
        later = page.context.new_page()
        later.goto(f"{server.http}/")
        later.wait_for_function("window.sensorium.eventLog === 'loaded'")
        later.wait_for_selector(f"{ended} .tl-bar")
        assert later.locator(".stream-card[data-stream=doorcam]").count() == 0
        assert not later.locator(f"{ended} .tl-bar.open").count()


TIMELINE_OF = """async (events) => {
    const { Timeline, intervalsOf, rowName } = await import('/static/timeline.js');
    const escapeHtml = (s) => String(s);
    const el = document.createElement('div');
    const timeline = new Timeline(el, { now: () => 1000, escapeHtml });
    const added = events.map((e) => timeline.add(e));
    const rows = intervalsOf(events).map((r) => ({ name: rowName(r), intervals: r.intervals }));
    timeline.render(1, new Map([['4/image/doorcam', { own: false }]]), true);
    return {
        added, rows, openNow: timeline.openIn('4/image/doorcam'),
        drawn: [...el.querySelectorAll('.tl-row:not(.tl-axis)')].map((r) => r.dataset.label),
        open: el.querySelectorAll('.tl-bar.open').length, lost: el.querySelectorAll('.tl-bar.lost').length,
        ended: [...el.querySelectorAll('.tl-stream.ended')].map((s) => s.dataset.stream),
    };
}"""


def event(state: str, time: float, label: str | None, group: str | None = None, **extra) -> dict:
    where = {"type": "event", "modality": "image", "stream": "doorcam", "client": 4}
    return {
        **where,
        "label": label,
        "group": group,
        "state": state,
        "score": 4.5,
        "seq": int(time),
        "ts": time,
        "time": time,
        **extra,
    }


def test_the_timeline_and_the_cards_from_messages(page, server):
    page.goto(f"{server.http}/")
    page.wait_for_function("window.sensorium !== undefined")
    events = [
        event("start", 950, "dog", "animals"),
        event("start", 952, "dog", "animals"),  # a repeated start: the event is already open
        event("end", 956, "dog", "animals", duration_s=6.0),
        event("end", 956, "dog", "animals", duration_s=6.0),  # the same event twice (live and logged)
        event("end", 990, "cat", "animals", duration_s=4.0),  # its start is older than what was loaded
        event("start", 980, None, "animals"),  # a group's own event, still open
        {**event("start", 970, "bell"), "stream": "gone", "client": 2},  # a stream that is no longer live
    ]
    got = page.evaluate(TIMELINE_OF, events)
    assert got["added"] == [True, True, True, False, True, True, True]
    rows = {row["name"]: row["intervals"] for row in got["rows"]}
    assert [(i["start"], i["end"]) for i in rows["dog"]] == [(950, 956)]
    assert [(i["start"], i["end"]) for i in rows["cat"]] == [(986, 990)]
    assert [(i["start"], i["end"]) for i in rows["any animals"]] == [(980, None)]
    assert got["openNow"] == [{"name": "any animals", "group": "animals", "own": True}]
    assert got["drawn"] == ["any animals", "cat", "dog", "bell"]  # the group's own row first
    assert got["open"] == 1  # the group's event grows; the gone stream's lost its end
    assert got["lost"] == 1 and got["ended"] == ["gone"]

    cards = page.evaluate(CARDS_OF)
    assert cards["names"] == ["doorcam", "mic"] and cards["own"] == ["mic"]
    assert cards["silent"] == "silent" and cards["top"] == ["dog"]
    assert cards["live"] == ["any animals"]  # from the timeline's open group event
    assert cards["first"] != cards["second"] and cards["revoked"]  # a new thumbnail frees the old one's bytes
    assert cards["after"] == ["mic"]  # a stream the server no longer lists loses its card


CARDS_OF = """async () => {
    const { Timeline } = await import('/static/timeline.js');
    const { Watch } = await import('/static/watch.js');
    const escapeHtml = (s) => String(s);
    const timeline = new Timeline(document.createElement('div'), { now: () => 1000, escapeHtml });
    timeline.add({ type: 'event', modality: 'image', stream: 'doorcam', client: 4, label: null, group: 'animals',
                   state: 'start', score: 4.5, seq: 1, ts: 990, time: 990 });
    const el = document.createElement('div');
    const watch = new Watch(el, { escapeHtml, timeline });
    watch.connected(7);
    watch.onStreams({ type: 'streams', streams: [
        { client: 4, modality: 'image', stream: 'doorcam', labels_version: 1, since: 900 },
        { client: 7, modality: 'audio', stream: 'mic', labels_version: 1, since: 950 }] });
    watch.onResult({ type: 'result', modality: 'audio', stream: 'mic', seq: 3, silent: true, top: [] });
    watch.onResult({ type: 'result', modality: 'image', stream: 'doorcam', client: 4, watched: true, seq: 5,
                     top: [{ label: 'dog', group: 'animals', score: 0.7, similarity: 0.3 }] });
    watch.renderLive();
    const card = (name) => el.querySelector(`.stream-card[data-stream="${name}"]`);
    const jpeg = new Uint8Array([0xff, 0xd8, 0xff, 0xd9]);
    const thumbnail = { type: 'thumbnail', client: 4, modality: 'image', stream: 'doorcam', format: 'jpeg',
                        data: jpeg };
    watch.onThumbnail(thumbnail);
    const first = card('doorcam').querySelector('img').src;
    watch.onThumbnail(thumbnail);
    const second = card('doorcam').querySelector('img').src;
    const revoked = await fetch(first).then(() => false, () => true);
    const names = [...el.querySelectorAll('.stream-card')].map((c) => c.dataset.stream);
    const own = [...el.querySelectorAll('.stream-card.own')].map((c) => c.dataset.stream);
    const result = {
        names, own, first, second, revoked,
        silent: card('mic').querySelector('.top').textContent,
        top: [...card('doorcam').querySelectorAll('.top .label')].map((l) => l.textContent),
        live: [...card('doorcam').querySelectorAll('.in-event')].map((l) => l.textContent),
    };
    watch.onStreams({ type: 'streams', streams: [{ client: 7, modality: 'audio', stream: 'mic', since: 950 }] });
    result.after = [...el.querySelectorAll('.stream-card')].map((c) => c.dataset.stream);
    return result;
}"""


# --- "Try it": a file, labels, the HTTP API, and the runs table ------------------------------------------

DROP_FILE = """({ name, type, data }) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type }));
    const zone = document.querySelector('#demo [data-demo=drop]');
    zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: transfer, bubbles: true, cancelable: true }));
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
}"""
RUN_ROWS = "#demo [data-demo=runs] tr"


def demo_classify(page, modality: str) -> dict:
    """Press Classify; the server's answer, once the page has added its row."""
    rows = page.locator(RUN_ROWS).count()
    with page.expect_response(lambda r: r.url.endswith(f"/v1/classify/{modality}")) as answer:
        page.click("#demo [data-demo=classify]")
    assert answer.value.status == 200, answer.value.text()
    page.wait_for_function(f"document.querySelectorAll('{RUN_ROWS}').length === {rows + 1}")
    return answer.value.json()


def run_rows(page) -> list[dict]:
    return page.locator(RUN_ROWS).evaluate_all(
        "rows => rows.map((r) => ({count: +r.dataset.count, encoded: +r.dataset.encoded, cached: +r.dataset.cached}))"
    )


def test_try_it_classifies_a_dropped_file_and_tables_the_runs(page, server):
    """The CLIP & CLAP demo's moment: 10, then 100, then 500 labels, then the same 500 again (all cached)."""
    page.goto(f"{server.http}/")
    page.wait_for_selector("#connection.open")
    page.wait_for_function("window.sensorium.labels.image && window.sensorium.labels.audio")
    image = base64.b64encode((REPO / "samples" / "cat.jpg").read_bytes()).decode()
    page.evaluate(DROP_FILE, {"name": "cat.jpg", "type": "image/jpeg", "data": image})
    assert "image" in page.inner_text("#demo [data-demo=file-name]")
    page.wait_for_function("document.querySelector('#demo [data-demo=image]').naturalWidth > 0")
    assert page.is_hidden("#demo [data-demo=sound]")

    names = [f"test object {i}" for i in range(500)]  # in no label file: the cache starts without them
    answers = []
    for count in (10, 100, 500, 500):
        # pasted text: comma-separated once, one per line after
        text = ", ".join(names[:count]) if count == 10 else "\n".join(names[:count])
        page.fill("#demo [data-demo=labels]", text)
        assert page.inner_text("#demo [data-demo=count]").startswith(f"{count} labels")
        answers.append(demo_classify(page, "image"))
    reported = [answer["labels"] for answer in answers]
    assert [r["count"] for r in reported] == [10, 100, 500, 500]
    assert [r["encoded"] for r in reported] == [10, 90, 400, 0]  # only what the cache lacked; then nothing
    assert run_rows(page) == [{k: r[k] for k in ("count", "encoded", "cached")} for r in reported]

    top = page.locator("#demo .demo-top tbody .name").all_inner_texts()
    assert top == [t["label"] for t in answers[-1]["top"]] and set(top) <= set(names)
    kind = page.evaluate("window.sensorium.welcome.modalities.image.scoring.kind")
    assert f"score ({kind})" in page.inner_text("#demo .demo-top thead")
    stages = page.locator("#demo [data-demo=stages] tr").evaluate_all("rows => rows.map((r) => r.dataset.stage)")
    assert stages[:6] == ["decode", "text encoding", "queue", "preprocess", "encode", "similarity"]
    assert "total" in stages
    text_row = page.inner_text("#demo [data-demo=stages] tr[data-stage='text encoding']")
    assert f"{answers[-1]['timings']['text_ms']:.1f} ms" in text_row and "500 labels: 0 encoded, 500 cached" in text_row

    # A sound through the file picker; the fill pads the audio label file's labels to 500.
    page.set_input_files("#demo [data-demo=picker]", str(REPO / "samples" / "speech.wav"))
    assert "audio" in page.inner_text("#demo [data-demo=file-name]")
    assert page.is_hidden("#demo [data-demo=image]") and page.is_visible("#demo [data-demo=sound]")
    page.click("#demo [data-fill='500']")
    filled = page.input_value("#demo [data-demo=labels]").splitlines()
    file_labels = [entry["label"] for entry in page.evaluate("window.sensorium.labels.audio.labels")]
    assert len(filled) == len(set(filled)) == 500 and filled[: len(file_labels)] == file_labels[:500]
    page.check("#demo [data-demo=encode-all]")  # the label file's labels are cached: time them afresh
    afresh = demo_classify(page, "audio")
    assert afresh["labels"] == {"source": "request", "count": 500, "encoded": 500, "cached": 0}
    page.uncheck("#demo [data-demo=encode-all]")
    assert demo_classify(page, "audio")["labels"]["encoded"] == 0
    assert run_rows(page)[-2:] == [
        {"count": 500, "encoded": 500, "cached": 0},
        {"count": 500, "encoded": 0, "cached": 500},
    ]
    kind = page.evaluate("window.sensorium.welcome.modalities.audio.scoring.kind")
    assert f"score ({kind})" in page.inner_text("#demo .demo-top thead")
    assert page.locator("#demo .demo-top tbody tr").count() == len(afresh["top"]) > 0


LABEL_PARSING = """async () => {
    const { parseLabels, modalityOf, fillLabels } = await import('/static/demo.js');
    return {
        lines: parseLabels('cat\\n\\n# a comment\\ndog, red kite ,\\nCat\\ncar = a photo of a car, parked.'),
        json: parseLabels('["a, b", "c"]'),
        modalities: [
            modalityOf({ name: 'x.bin', type: 'image/png' }), modalityOf({ name: 'clip.FLAC', type: '' }),
            modalityOf({ name: 'a.wav', type: 'audio/x-wav' }), modalityOf({ name: 'a.mp4', type: 'video/mp4' }),
            modalityOf({ name: 'a.txt', type: '' }),
        ],
        fill: fillLabels(['dog', 'Dog', 'cat'], 'audio', 5),
    };
}"""


def test_try_it_reads_labels_and_files_as_the_server_does_and_says_what_it_cannot_take(page, server):
    page.goto(f"{server.http}/")
    page.wait_for_selector("#connection.open")
    got = page.evaluate(LABEL_PARSING)
    # a name given twice counts once (the server drops it too); a line with prompts keeps its commas
    assert got["lines"] == ["cat", "dog", "red kite", "car = a photo of a car, parked."]
    assert got["json"] == ["a, b", "c"]
    assert got["modalities"] == ["image", "audio", "audio", None, None]
    assert got["fill"][:2] == ["dog", "cat"] and len(got["fill"]) == len(set(got["fill"])) == 5

    page.click("#demo [data-demo=classify]")
    assert "Drop an image or a sound file first" in page.inner_text("#demo [data-demo=message]")
    page.evaluate(DROP_FILE, {"name": "notes.txt", "type": "text/plain", "data": base64.b64encode(b"hi").decode()})
    assert "not a file the server classifies" in page.inner_text("#demo [data-demo=message]")
    page.evaluate(
        DROP_FILE, {"name": "cat.jpg", "type": "image/jpeg", "data": base64.b64encode(b"not a jpeg").decode()}
    )
    page.fill("#demo [data-demo=labels]", "cat\n@template x {}")  # the server refuses the bad line, and says why
    page.click("#demo [data-demo=classify]")
    page.wait_for_function("document.querySelector('#demo [data-demo=message]').textContent.includes('not classified')")
    message = page.inner_text("#demo [data-demo=message]")
    assert "400" in message and "'labels'" in message and "@template x {}" in message, message
    assert page.locator(RUN_ROWS).count() == 0
