"""The dashboard in a real browser: `streamlit run` on a loopback port, Debian's Chromium via Playwright.

Screenshots land in artifacts/screenshots/ so a person can look at what the user sees."""

import re

import pytest
from playwright.sync_api import expect, sync_playwright

from diagnostics.config import RunConfig
from diagnostics.lessons import LESSONS
from diagnostics.links import share_query
from diagnostics.runner import run_into_store
from diagnostics.store import Store
from tests.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, streamlit_server

TIMEOUT_MS = 120_000
expect.set_options(timeout=TIMEOUT_MS)  # a shared 2-core machine can be slow to render


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(tmp / "runs.sqlite", tmp / "streamlit.log") as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                yield url, browser, tmp / "runs.sqlite"
            finally:
                browser.close()


def new_page(browser):
    # Tall, because Streamlit scrolls inside its own container and full-page screenshots stop at the viewport.
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.set_default_timeout(TIMEOUT_MS)
    return page


def settle(page) -> None:
    """Wait until the script run is over (Streamlit's running indicator is gone) and charts have drawn."""
    page.wait_for_timeout(500)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    page.wait_for_timeout(1000)


def snapshot(page, name: str) -> None:
    """A screenshot of the settled page, for a person to look at."""
    settle(page)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=False)


def test_a_lesson_link_opened_first_on_a_fresh_server_goes_through_the_router(tmp_path):
    # Streamlit resolves a fresh server's first deep link by its page folder; if it bypassed dashboard.py the
    # sidebar would list file names and the wide layout would be lost.
    with streamlit_server(tmp_path / "runs.sqlite", tmp_path / "streamlit.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = new_page(browser)
            page.goto(f"{url}/lab?{share_query(LESSONS[0], 0)}")
            expect(page.get_by_role("heading", name=f"Lesson 1: {LESSONS[0].title}")).to_be_visible()
            nav = page.get_by_test_id("stSidebarNav")
            expect(nav).to_contain_text("Runs")
            # each link reads "<icon name> <title>"; the legacy app would list dashboard, gates, home, lab, runs
            titles = [link.inner_text().split(maxsplit=1)[-1] for link in nav.get_by_role("link").all()]
            assert titles == ["Home", "Lab", "Lessons side by side", "Gates", "Runs"]
        finally:
            browser.close()


def test_home_lists_the_lessons(app):
    url, browser, _ = app
    page = new_page(browser)
    page.goto(url)
    expect(page.get_by_role("heading", name="Gradient Flow Lab", exact=True)).to_be_visible()
    for lesson in LESSONS:
        expect(page.get_by_text(f"{lesson.number}. {lesson.title}")).to_be_visible()
    expect(page.locator(".katex").first).to_be_visible()  # the cell equations are typeset
    penalty = page.get_by_test_id("stCaptionContainer").filter(has_text="An L2 penalty")
    expect(penalty.locator(".katex")).to_have_count(6)  # the lesson's maths too, not its LaTeX source
    snapshot(page, "home")


def test_explosion_lesson_link_runs_and_shows_the_nan_banner(app):
    url, browser, _ = app
    page = new_page(browser)
    page.goto(f"{url}/lab?{share_query(LESSONS[0], 0)}")
    expect(page.get_by_text(re.compile(r"Non-finite values \(NaN/Inf\) first at step \d+"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"Run \d+ diverged"))).to_be_visible()
    expect(page.get_by_text("Problem: exploding gradients (a value went non-finite).")).to_be_visible()
    expect(page.get_by_text("Exploding gradients: problem")).to_be_visible()
    expect(page.get_by_role("button", name="Clip the gradient norm at 1", exact=True)).to_be_visible()
    snapshot(page, "lab-explosion-lesson")


def test_the_clipping_lesson_says_no_problem_first_and_keeps_its_note_collapsed(app):
    url, browser, _ = app
    page = new_page(browser)
    page.goto(f"{url}/lab?{share_query(LESSONS[1], 0)}")
    expect(page.get_by_text(re.compile(r"^No problem: the model learned .*; 1 note\.$"))).to_be_visible()
    note = page.get_by_text(re.compile(r"Clipping capped \d+ jumps? of the gradient norm"))
    expect(note).to_be_hidden()  # collapsed under its expander until asked for
    page.get_by_text("1 note: signals that did no harm to this run").click()
    expect(note).to_be_visible()
    expect(page.get_by_text(re.compile(r"gradients: problem"))).to_have_count(0)
    snapshot(page, "lab-clipping-lesson")


def test_live_chart_grows_and_stop_ends_the_run(app):
    url, browser, _ = app
    page = new_page(browser)
    config = RunConfig(hidden_size=32, steps=100_000, record_every=5)
    page.goto(f"{url}/lab?{config.to_query()}&autorun=1")
    progress = page.get_by_text(re.compile(r"^(\d+) / 100000 steps"))
    expect(progress).to_be_visible()
    first = int(re.match(r"\d+", progress.inner_text()).group())
    for _ in range(120):  # the page polls once a second while the run trains; the machine may be busy
        page.wait_for_timeout(500)
        if int(re.match(r"\d+", progress.inner_text()).group()) > first:
            break
    else:
        pytest.fail(f"the progress stayed at {first} steps for a minute")
    expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "lab-live.png", full_page=False)
    page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile(r"Run \d+ stopped after \d+ steps"))).to_be_visible()
    snapshot(page, "lab-stopped")


def test_a_viewers_smoothing_choice_survives_the_live_updates(app):
    url, browser, _ = app
    page = new_page(browser)
    config = RunConfig(hidden_size=16, steps=100_000, record_every=5, seed=21)
    page.goto(f"{url}/lab?{config.to_query()}&autorun=1")
    progress = page.get_by_text(re.compile(r"^(\d+) / 100000 steps"))
    expect(progress).to_be_visible()
    smooth = page.get_by_role("checkbox", name=re.compile("Smooth the training-batch accuracy"))
    expect(smooth).to_be_checked()
    smooth.uncheck()
    seen = int(re.match(r"\d+", progress.inner_text()).group())
    for _ in range(3):  # three visible updates of the charts' rows, each with new steps
        for _ in range(120):
            page.wait_for_timeout(500)
            now = int(re.match(r"\d+", progress.inner_text()).group())
            if now > seen:
                seen = now
                break
        else:
            pytest.fail(f"the progress stayed at {seen} steps for a minute")
    expect(smooth).not_to_be_checked()  # the chart took new rows in place: the viewer's choice stands
    page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile(r"Run \d+ stopped after \d+ steps"))).to_be_visible()


def test_runs_and_gates_pages_show_the_stored_runs(app):
    url, browser, db = app
    # One LSTM run of its own, stored as the CLI would, so this test needs no other test's runs.
    run_id = run_into_store(RunConfig(cell="lstm", hidden_size=8, batch_size=8, seq_len=5, steps=5), Store(db)).run_id
    page = new_page(browser)
    page.goto(f"{url}/runs")
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"\d+ of \d+ runs"))).to_be_visible()
    snapshot(page, "runs")
    page.goto(f"{url}/gates?run={run_id}")
    expect(page.get_by_role("heading", name="Gates", exact=True)).to_be_visible()
    expect(page.get_by_text("Which units carry number")).to_be_visible()
    expect(page.get_by_text("Weights after step 5 of 5.", exact=False)).to_be_visible()
    expect(page.get_by_role("heading", name="Over training", exact=True)).to_be_visible()
    snapshot(page, "gates")
    page.get_by_role("slider", name="Weights after training step").focus()
    page.keyboard.press("Home")  # the initial weights
    expect(page.get_by_text("Initial weights, before the first training step of 5.", exact=False)).to_be_visible()
    assert "step=0" in page.url  # the step is in the link a teacher copies
    snapshot(page, "gates-initial-weights")


def test_a_hostile_link_shows_its_text_and_no_image_or_link(app):
    url, browser, _ = app
    page = new_page(browser)
    evil = "http://127.0.0.1:9/evil.png"  # port 9 (discard): nothing there even if a browser tried
    page.goto(f"{url}/lab?cell=![x]({evil})&lesson=[click me](http://127.0.0.1:9/)&autorun=1")
    # the text as typed (a word joiner, invisible, after "http:" keeps it from being autolinked)
    expect(page.get_by_text(re.compile("Unknown lesson '\\[click me\\]\\(http:\u2060//127\\.0\\.0\\.1:9/\\)'"))
           ).to_be_visible()
    expect(page.get_by_text(re.compile("cell='!\\[x\\]\\(http:\u2060//127\\.0\\.0\\.1:9/evil\\.png\\)' is not "
                                       "valid"))).to_be_visible()
    main = page.get_by_test_id("stMainBlockContainer")
    expect(main.locator("img[src*='evil']")).to_have_count(0)
    expect(main.locator("a[href*='127.0.0.1:9']")).to_have_count(0)
    snapshot(page, "lab-hostile-link")


def test_pause_step_and_resume_hold_the_live_view_and_the_scrubber_moves_the_profile(app):
    url, browser, db = app
    page = new_page(browser)
    main = page.get_by_test_id("stMainBlockContainer")
    config = RunConfig(hidden_size=16, steps=100_000, record_every=5, seed=11)
    page.goto(f"{url}/lab?{config.to_query()}&autorun=1")
    expect(page.get_by_text(re.compile(r"^\d+ / 100000 steps ·"))).to_be_visible()
    pause = main.get_by_role("button", name="Pause", exact=True)
    pause.click()
    paused = page.get_by_text(re.compile(r"Paused at step (\d+) / 100000"))
    page.wait_for_timeout(5000)
    if pause.count() and not paused.count():
        # Seen twice in about ten runs: a click right after the first progress line was not acted on (the run
        # went on). One more click, as a person would; it cannot resume a run the first click did pause, since the
        # button acts as it was labelled when drawn (this once resumed the run here and failed CI).
        pause.click()
    expect(paused).to_be_visible()
    held = int(re.search(r"step (\d+)", paused.inner_text()).group(1))
    page.wait_for_timeout(1500)
    assert f"Paused at step {held} /" in paused.inner_text()  # it holds
    main.get_by_role("button", name="Step", exact=True).click()
    expect(page.get_by_text(f"Paused at step {held + 1} / 100000", exact=False)).to_be_visible()
    # A held run's view still polls every second, so the running indicator may never stay gone: the pause was
    # checked above, this picture is for a person (waiting for the indicator failed CI once after 120 s).
    page.wait_for_timeout(1500)
    page.screenshot(path=SCREENSHOTS / "lab-paused.png", full_page=False)
    main.get_by_role("button", name="Resume", exact=True).click()
    expect(page.get_by_text(re.compile(r"^\d+ / 100000 steps ·"))).to_be_visible()
    main.get_by_role("button", name="Stop", exact=True).click()
    expect(page.get_by_text(re.compile(r"Run \d+ stopped after \d+ steps"))).to_be_visible()

    stored = run_into_store(RunConfig(hidden_size=8, batch_size=8, seq_len=5, steps=12, record_every=3, seed=12),
                            Store(db))
    page.goto(f"{url}/lab?run={stored.run_id}")
    expect(page.get_by_text("at step 12, the latest with a finite profile", exact=False)).to_be_visible()
    slider = page.get_by_role("slider")
    slider.focus()
    page.keyboard.press("Home")  # the first recorded step
    expect(page.get_by_text("at step 1, the step chosen below", exact=False)).to_be_visible()
    snapshot(page, "lab-scrubbed")


def test_a_lesson_page_trains_its_variants_together_and_overlays_them(app):
    url, browser, _ = app
    page = new_page(browser)
    main = page.get_by_test_id("stMainBlockContainer")
    page.goto(f"{url}/lesson?lesson=irnn")
    expect(page.get_by_role("heading", name="Lesson 6: Identity initialisation with ReLU (IRNN)")).to_be_visible()
    together = False
    for _ in range(240):  # both variants start at once (two free slots on this server)
        if main.get_by_text(re.compile(r"^Training: \d+ / 800 steps$")).count() == 2:
            together = True
            break
        page.wait_for_timeout(250)
    assert together, "the two variants never trained at the same time"
    expect(main.get_by_text(re.compile(r"^Run \d+ completed after 800 steps"))).to_have_count(2)
    expect(main.get_by_text("solid: the first recorded step (step 1), dashed: the last recorded step")
           ).to_be_visible()  # the profile chart's note (chart titles are drawn, not headings)
    expect(main.locator("[data-testid='stVegaLiteChart']")).to_have_count(3)
    expect(main.get_by_test_id("stException")).to_have_count(0)
    snapshot(page, "lesson-side-by-side")


def test_a_watched_script_is_followed_live_and_ends_with_its_verdict(app):
    import os
    import subprocess
    import sys
    import time

    from tests.test_watched_lab import ROOT, SLOW_SCRIPT

    url, browser, db = app
    script = subprocess.Popen([sys.executable, "-c", SLOW_SCRIPT, str(db), "100"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (watched := [r for r in Store(db).list_runs() if r.watched and r.steps_done]):
            assert time.monotonic() < deadline, "the script recorded nothing"
            time.sleep(0.1)
        run_id = watched[0].id
        page = new_page(browser)
        page.goto(f"{url}/lab?run={run_id}")
        expect(page.get_by_text(re.compile(rf"Run {run_id}: step \d+ recorded so far"))).to_be_visible()
        expect(page.get_by_text("recorded by watch in a training script", exact=False)).to_be_visible()
        expect(page.locator("[data-testid='stVegaLiteChart']")).to_have_count(8)
        page.wait_for_timeout(1500)
        page.screenshot(path=SCREENSHOTS / "lab-watched-live.png", full_page=False)
        assert script.wait(timeout=120) == 0
    finally:
        script.kill()
    expect(page.get_by_text(f"Run {run_id} completed after 100 steps", exact=False)).to_be_visible()
    expect(page.get_by_text("No exploding problem: the loss went from", exact=False)).to_be_visible()
    expect(page.locator("[data-testid='stVegaLiteChart']")).to_have_count(8)  # the charts stayed
    snapshot(page, "lab-watched-done")
