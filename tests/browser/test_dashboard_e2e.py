"""End to end: the real Streamlit server, driven in headless Debian chromium through playwright.

Loads the What-if page, changes the replica count and checks the p99 shown changes; uploads a
broken scenario and checks the page shows an error, not a traceback; opens every page by its URL and
checks it shows the one titled navigation in the wide layout; checks the calibration metrics fit their
cards and the autoscaling page's default shows the static fleet overwhelmed. Screenshots go to the
test's tmp_path and are copied to /tmp/capsim-shots/ for people to look at.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
SHOTS = Path("/tmp/capsim-shots")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url}/_stcore/health did not answer within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=APP.parent.parent)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed (scripts/install_browser.sh installs Debian's)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    try:
        yield pg
    finally:
        context.close()


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / path.name)
    return path


def _settled(page) -> None:
    """Wait until the script run is over (the running indicator gone) and nothing is stale."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]') && "
        "!document.querySelector('[data-stale=\"true\"]')", timeout=60_000)


def _metric(page, label: str) -> str:
    card = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return card.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_what_if_p99_changes_with_replicas(server, page, tmp_path):
    page.goto(server)
    page.get_by_text("p99 latency").first.wait_for()
    _settled(page)
    expect_name = page.get_by_text(re.compile(r"Scenario\s+fraud-mlp"))
    assert expect_name.count() >= 1
    before = _metric(page, "p99 latency")
    assert before.endswith("ms")
    _shot(page, tmp_path, "01_what_if_default")

    box = page.get_by_label("Replicas (GPUs)")
    box.fill("1")
    box.press("Enter")
    deadline = time.monotonic() + 60
    after = before
    while after == before and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        after = _metric(page, "p99 latency")
    _settled(page)
    after = _metric(page, "p99 latency")
    assert after != before, f"p99 stayed at {before} after changing replicas"
    assert page.get_by_text("Candidate").first.is_visible()
    _shot(page, tmp_path, "02_what_if_one_replica")

    page.get_by_role("tab", name="Timeline").click()
    page.wait_for_timeout(1500)
    page.get_by_role("tab", name="Timeline").scroll_into_view_if_needed()
    _shot(page, tmp_path, "03_what_if_timeline")


def test_bad_scenario_upload_shows_error(server, page, tmp_path):
    page.goto(server)
    page.get_by_text("p99 latency").first.wait_for()
    _settled(page)
    page.get_by_text("Scenario", exact=True).first.click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
        files=[{"name": "broken.yaml", "mimeType": "application/x-yaml",
                "buffer": b"workload:\n  arrivals: {process: poison, rate_rps: 10}\n"}])
    page.get_by_text("Scenario not loaded").first.wait_for()
    _settled(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "did you mean 'poisson'" in page.locator('[data-testid="stAlert"]').first.inner_text()
    _shot(page, tmp_path, "04_bad_upload_error")


def test_scenario_naming_a_server_file_is_refused(server, page, tmp_path):
    page.goto(server)
    page.get_by_text("p99 latency").first.wait_for()
    _settled(page)
    page.get_by_text("Scenario", exact=True).first.click()
    dropzone = page.locator('[data-testid="stFileUploaderDropzone"]').first
    assert "50MB" in dropzone.inner_text().replace(" ", "")  # the upload limit, as the server enforces it
    page.wait_for_timeout(500)  # the expander has opened
    _shot(page, tmp_path, "04b_upload_limit")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
        files=[{"name": "sneaky.yaml", "mimeType": "application/x-yaml",
                "buffer": b"workload:\n  arrivals: {process: trace, path: /etc/passwd}\n"}])
    page.get_by_text("Scenario not loaded").first.wait_for()
    _settled(page)
    alert = page.locator('[data-testid="stAlert"]').first.inner_text()
    assert "workload.arrivals.path = '/etc/passwd'" in alert
    assert "files uploaded in this session or shipped with capsim" in alert
    _shot(page, tmp_path, "04c_server_file_refused")


NAVIGATION = ["What-if", "Batching trade-off", "Autoscaling", "Calibration", "Planner", "LLM serving",
              "Offline and streaming", "Online architectures", "Training"]


def _navigation(page) -> list[str]:
    """The page titles in the sidebar's navigation (each link also holds its icon's name)."""
    return [text.split("\n")[-1].strip() for text in
            page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()]


@pytest.mark.parametrize("path,heading", [("", "What-if"), ("batching", "Batching trade-off"),
                                          ("autoscaling", "Autoscaling"), ("calibration", "Calibration"),
                                          ("planner", "Planner"), ("llm", "LLM serving")])
def test_pages_render(server, page, tmp_path, path, heading):
    """Opened by its URL, every page shows the one titled navigation and the wide layout."""
    page.goto(f"{server}/{path}")
    page.get_by_role("heading", name=heading).first.wait_for()
    _settled(page)
    page.wait_for_timeout(800)  # let the charts draw
    assert page.locator('[data-testid="stException"]').count() == 0
    assert _navigation(page) == NAVIGATION
    assert page.locator('[data-testid="stMainBlockContainer"]').bounding_box()["width"] > 900  # wide, not centred
    _shot(page, tmp_path, f"05_{path or 'what_if'}")
    page.mouse.move(800, 500)
    page.mouse.wheel(0, 700)
    page.wait_for_timeout(600)
    _shot(page, tmp_path, f"06_{path or 'what_if'}_scrolled")


def test_calibration_metrics_fit_their_cards(server, page, tmp_path):
    page.goto(f"{server}/calibration")
    page.get_by_text("Largest batch that fits").first.wait_for()
    _settled(page)
    assert _metric(page, "Largest batch that fits") == "682k req"
    values = page.locator('[data-testid="stMetricValue"] [data-testid="stMarkdownContainer"]')
    assert values.count() == 4
    for i in range(values.count()):
        scroll, client = values.nth(i).evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert scroll <= client, f"metric {values.nth(i).inner_text()!r} is cut off"
    _shot(page, tmp_path, "07_calibration_metrics")


def test_autoscaling_default_shows_the_cold_start_trade_off(server, page, tmp_path):
    page.goto(f"{server}/autoscaling")
    page.get_by_role("heading", name="Autoscaling").first.wait_for()
    page.get_by_text("within SLO").first.wait_for()
    _settled(page)
    assert page.get_by_text("autoscaling/spike_cold_start").count() >= 1
    cells = page.locator('[data-testid="stTable"] tr').filter(has_text="within SLO").first.locator("td")
    static, autoscaled = (float(cells.nth(i).inner_text().strip().rstrip(" %")) for i in (0, 1))
    assert static < autoscaled
    page.wait_for_timeout(800)
    _shot(page, tmp_path, "08_autoscaling_default")


def _charts_drawn(page, at_least: int) -> int:
    """Wait until at least ``at_least`` visible Altair charts have drawn a canvas or SVG with a size."""
    page.wait_for_function(
        """n => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].filter(c => {
              const g = c.querySelector('canvas, svg'); if (!g) return false;
              const r = g.getBoundingClientRect(); return r.width > 100 && r.height > 50; }).length >= n""",
        arg=at_least, timeout=60_000)
    return page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg').count()


def test_llm_page_draws_every_tab(server, page, tmp_path):
    """/llm by its URL: the chat example's figures, then each tab's charts (replicas × TP, the scheduler knob,
    the timelines, the memory bars) drawn, and no traceback."""
    page.goto(f"{server}/llm")
    page.get_by_role("heading", name="LLM serving").first.wait_for()
    page.get_by_text("TTFT p99").first.wait_for()
    _settled(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert _metric(page, "Cost per hour") == "$24.58/h"
    assert _metric(page, "TPOT p99").endswith("ms")
    _charts_drawn(page, 3)
    page.wait_for_timeout(800)
    _shot(page, tmp_path, "09_llm_replicas_tp")
    for n, (tab, charts) in enumerate((("Scheduler knobs", 2), ("Timelines", 4), ("Memory", 1)), start=10):
        page.get_by_role("tab", name=tab).click()
        _settled(page)
        panel = page.get_by_role("tabpanel", name=tab)
        panel.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
        drawn = panel.locator('[data-testid="stVegaLiteChart"]').count()
        assert drawn == charts, f"{tab}: {drawn} charts"
        page.wait_for_timeout(1200)
        panel.scroll_into_view_if_needed()
        _shot(page, tmp_path, f"{n}_llm_{tab.split()[0].lower()}")
    assert "KV cache for" in page.get_by_role("tabpanel", name="Memory").inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0
