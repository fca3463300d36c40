"""A class on one server: thirty browser sessions (one Chromium, thirty contexts, loopback) open one lesson link
within a few seconds. One run is trained, and every session sees its charts and its end."""

import re
import time

from playwright.sync_api import expect, sync_playwright

from diagnostics.lessons import LESSONS
from diagnostics.links import share_query
from diagnostics.store import Store
from tests.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, streamlit_server

CLASS_SIZE = 30
TIMEOUT_MS = 300_000  # thirty sessions drawing nine charts each on a 2-core machine
LESSON = LESSONS[1]  # clipping tames the explosion: 300 steps, a few seconds of training alone


def test_thirty_students_opening_one_lesson_link_watch_one_run(tmp_path):
    db = tmp_path / "runs.sqlite"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(db, tmp_path / "streamlit.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            pages = [browser.new_context(viewport={"width": 1200, "height": 1600}).new_page()
                     for _ in range(CLASS_SIZE)]  # thirty students with the tab open, before the link arrives
            link = f"{url}/lab?{share_query(LESSON, 0)}"
            started = time.monotonic()
            for page in pages:  # each follows the link without waiting for the others' pages to load
                page.set_default_timeout(TIMEOUT_MS)
                page.evaluate("link => { window.location.href = link; }", link)
            opened_in = time.monotonic() - started
            assert opened_in < 10, f"following the link in {CLASS_SIZE} tabs took {opened_in:.0f} s"
            for page in pages:  # every student sees the run's charts...
                expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible(timeout=TIMEOUT_MS)
            finished = re.compile(r"Run (\d+) completed after 300 steps")
            ids = set()
            for page in pages:  # ...and its end, with the same run id
                banner = page.get_by_text(finished)
                expect(banner).to_be_visible(timeout=TIMEOUT_MS)
                ids.add(finished.search(banner.inner_text()).group(1))
            pages[-1].screenshot(path=SCREENSHOTS / "lab-class-of-thirty.png")
        finally:
            browser.close()
    runs = Store(db).list_runs()
    assert len(ids) == 1 and [str(r.id) for r in runs] == list(ids)  # trained once for the whole class
    assert runs[0].status == "completed" and runs[0].steps_done == 300
