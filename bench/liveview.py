"""L1: how live a lesson looks in a browser — time to first chart, the gaps between visible updates, and whether
any chart left the screen or faded while the run trained and when it finished.

A real `streamlit run` on a loopback port, warmed by one page view and one finished run, and headless Chromium
opening a lesson link. In the page a sampler runs every SAMPLE_MS: it counts the charts on screen, notes any
drawn faded (Streamlit's stale-element opacity), and hashes what each chart's canvas shows. A visible update is a
sample in which any chart's pixels changed; the intervals between them are what a student sees as cadence. A
re-mount is a chart canvas replaced by a new one (the chart built again from scratch, a blank moment).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from diagnostics.lessons import LESSONS
from diagnostics.links import share_query

from .viewers import _seconds

SAMPLE_MS = 100
# The lessons a class watches live: the explosion (lesson 1), the forgetting tanh RNN and the LSTM that carries
# the number (lesson 3 and 4), at their own sizes.
MEASURED = (("exploding-nan", 0), ("tanh-forgets", 0), ("lstm-remembers", 0))
QUICK_MEASURED = (("exploding-nan", 0),)  # paced at a step a second, four steps: the shortest lesson to watch
AFTER_DONE_SECONDS = 4.0  # sampled on after the run finished, to catch charts leaving in the final view
SAMPLER = """
(sampleMs) => {
  window.__gfl = {samples: [], canvases: 0};
  const seen = new WeakSet();
  const hash = (s) => { let h = 0; for (let i = 0; i < s.length; i += 7) h = (h * 31 + s.charCodeAt(i)) | 0;
                        return h + ':' + s.length; };
  const tick = () => {
    const charts = [...document.querySelectorAll("[data-testid='stVegaLiteChart']")];
    const shown = charts.filter(c => { const r = c.getBoundingClientRect(); return r.width > 0 && r.height > 0; });
    let faded = 0; const hashes = [];
    for (const c of shown) {
      let e = c, opacity = 1;
      while (e && e !== document.body) {
        opacity *= parseFloat(getComputedStyle(e).opacity || '1');
        e = e.parentElement;
      }
      if (opacity < 0.99) faded += 1;
      const canvas = c.querySelector('canvas');
      if (canvas && !seen.has(canvas)) { seen.add(canvas); window.__gfl.canvases += 1; }
      hashes.push(canvas ? hash(canvas.toDataURL()) : (c.querySelector('svg') || c).innerHTML.length);
    }
    const progress = document.querySelector("[data-testid='stProgress']");
    const status = document.querySelector(
      "[data-testid='stAlertContentSuccess'], [data-testid='stAlertContentWarning']");
    window.__gfl.samples.push({t: performance.now(), charts: shown.length, faded, hashes: hashes.join('|'),
                               progress: progress ? progress.innerText : '', done: !!status});
  };
  window.__gfl.timer = setInterval(tick, sampleMs);
}
"""


def _lesson(slug: str):
    return next(lesson for lesson in LESSONS if lesson.slug == slug)


def measure(url: str, browser, slug: str, variant: int) -> dict:
    """Open the lesson's link in a new context and sample until its run has been finished for a few seconds."""
    context = browser.new_context(viewport={"width": 1280, "height": 2000})
    page = context.new_page()
    page.add_init_script(f"window.addEventListener('load', () => ({SAMPLER})({SAMPLE_MS}));")
    opened, opened_wall = time.monotonic(), time.time()
    page.goto(f"{url}/lab?{share_query(_lesson(slug), variant)}", wait_until="load")
    started = page.evaluate("performance.timeOrigin") / 1000
    done_at = None
    deadline = opened + 300
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if done_at is None and page.evaluate("(window.__gfl?.samples || []).some(s => s.done)"):
            done_at = time.monotonic()
        if done_at is not None and time.monotonic() - done_at > AFTER_DONE_SECONDS:
            break
    samples, canvases = page.evaluate("[window.__gfl.samples, window.__gfl.canvases]")
    context.close()
    offset = started - opened_wall  # performance.now() counts from the navigation's start
    return _summary(slug, variant, samples, offset, finished=done_at is not None) | {
        "remounts": max(canvases - max((s["charts"] for s in samples), default=0), 0)}


def _summary(slug: str, variant: int, samples: list[dict], offset: float, finished: bool) -> dict:
    charted = [s for s in samples if s["charts"] > 0]
    first = charted[0]["t"] / 1000 + offset if charted else None
    live = [s for s in charted if not s["done"]]
    updates = [b["t"] for a, b in zip(live, live[1:]) if a["hashes"] != b["hashes"]]
    gaps = [(b - a) / 1000 for a, b in zip(updates, updates[1:])]
    most = max((s["charts"] for s in charted), default=0)
    after_full = charted[next((i for i, s in enumerate(charted) if s["charts"] == most), 0):]
    return {"lesson": f"{slug} {variant}", "finished": finished, "first_chart_s": None if first is None else
            round(first, 2), "updates": len(updates),
            "update_gap_median_s": round(statistics.median(gaps), 2) if gaps else None,
            "update_gap_max_s": round(max(gaps), 2) if gaps else None,
            "charts": most, "fewest_charts_after_all_shown": min((s["charts"] for s in after_full), default=0),
            "faded_samples": sum(1 for s in charted if s["faded"])}


def live_view_case(quick: bool) -> dict:
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server

    with tempfile.TemporaryDirectory(prefix="gfl-l1-") as tmp, \
            streamlit_server(Path(tmp) / "runs.sqlite", Path(tmp) / "streamlit.log") as url, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            warm = browser.new_page()  # a warm server: its pages and torch imported, one run trained
            warm.goto(f"{url}/lab?{share_query(_lesson('lstm-remembers'), 0)}&steps=20", wait_until="load")
            warm.get_by_text("Diagnosis").first.wait_for(timeout=120_000)
            warm.close()
            rows = [measure(url, browser, slug, variant) for slug, variant in (QUICK_MEASURED if quick else MEASURED)]
        finally:
            browser.close()
    return {"what": "a lesson link in Chromium: first chart, gaps between visible updates, charts that left",
            "measured": time.strftime("%Y-%m-%d %H:%M"), "quick": quick, "first_chart_target_s": 2.0,
            "update_gap_target_s": 1.5, "results": rows}


def table(case: dict) -> str:
    lines = [f"L1: {case['what']}",
             f"  {'lesson':14} {'first chart':>11} {'updates':>7} {'gap median':>10} {'gap max':>8} "
             f"{'charts':>6} {'fewest after':>12} {'faded':>5} {'re-mounts':>9}"]
    for r in case["results"]:
        lines.append(f"  {r['lesson']:14} {_seconds(r['first_chart_s']):>11} {r['updates']:>7} "
                     f"{_seconds(r['update_gap_median_s']):>10} {_seconds(r['update_gap_max_s']):>8} "
                     f"{r['charts']:>6} {r['fewest_charts_after_all_shown']:>12} {r['faded_samples']:>5} "
                     f"{r.get('remounts', 0):>9}"
                     + ("" if r["finished"] else "  (not finished in 300 s)"))
    return "\n".join(lines)
