"""P8: what viewers of one live run cost the dashboard server, and how long they wait for its first chart.

A real `streamlit run` on a loopback port and one headless Chromium with 1, 10 and 30 contexts; every context
opens the same long experiment's link, so they all watch one run (one run per experiment). For each count: the
seconds from a context's `goto` to its first chart (median and max), and the server process's own CPU seconds
per wall-clock second while they watch (the run trains in a process of its own, which is not counted). The
browsers share the machine with the server, so on 2 cores the numbers are an upper bound.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from diagnostics.config import RunConfig
from diagnostics.store import Store

VIEWERS = (1, 10, 30)
QUICK_VIEWERS = (2,)
WATCH_SECONDS = 15.0
FIRST_CHART_SECONDS = 300.0  # after the last viewer opened the link; a viewer without a chart by then is counted
# A lesson-sized LSTM that trains far longer than the measurement (30 browsers on 2 cores take minutes to draw
# their first charts), recording every 10 steps (the lessons' rate); the server's cap on a run's time is lifted.
CONFIG = RunConfig(cell="lstm", hidden_size=64, seq_len=20, steps=100_000, record_every=10)
SERVER = {"GFL_MAX_RUN_MINUTES": "0", "GFL_MAX_RUN_MB": "0"}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _server_pid(port_url: str, log: Path) -> int:
    port = port_url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"streamlit" in b" ".join(cmdline) and port.encode() in cmdline:
                return int(entry.name)
    raise RuntimeError(f"no streamlit process on port {port}; see {log}")


def measure(count: int, watch_seconds: float, seed: int) -> dict:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server

    config = CONFIG.replace(seed=seed)  # a new experiment per count: each starts with its run's first step
    with tempfile.TemporaryDirectory(prefix="gfl-p8-") as tmp, \
            streamlit_server(Path(tmp) / "runs.sqlite", Path(tmp) / "streamlit.log", environ=SERVER) as url, \
            sync_playwright() as p:
        pid = _server_pid(url, Path(tmp) / "streamlit.log")
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            pages, opened = [], []
            for _ in range(count):
                page = browser.new_context(viewport={"width": 1200, "height": 1600}).new_page()
                page.set_default_timeout(300_000)
                opened.append(time.monotonic())
                page.goto(f"{url}/lab?{config.to_query()}&autorun=1", wait_until="commit")
                pages.append(page)
            first_chart, deadline = [], opened[-1] + FIRST_CHART_SECONDS
            for page, at in zip(pages, opened):
                try:
                    page.locator("[data-testid='stVegaLiteChart']").first.wait_for(
                        state="visible", timeout=max(deadline - time.monotonic(), 0.001) * 1000)
                except PlaywrightTimeout:
                    continue  # counted as not reached: the measurement goes on with the others
                first_chart.append(time.monotonic() - at)
            store = Store(Path(tmp) / "runs.sqlite", create=False)
            [run] = store.list_runs()  # one run for every viewer
            cpu, wall, steps = _cpu_seconds(pid), time.monotonic(), run.steps_done
            time.sleep(watch_seconds)
            elapsed = time.monotonic() - wall
            cpu_per_second = (_cpu_seconds(pid) - cpu) / elapsed
            run = store.get_run(run.id)
            if run.status != "running":
                raise RuntimeError(f"the run ended ({run.status}) before the viewers were measured watching it")
            steps_per_second = (run.steps_done - steps) / elapsed
        finally:
            browser.close()
    reached = len(first_chart)
    return {"viewers": count, "first_chart_reached": reached,
            "first_chart_median_s": round(statistics.median(first_chart), 2) if reached else None,
            "first_chart_max_s": round(max(first_chart), 2) if reached == count else None,
            "server_cpu_per_s": round(cpu_per_second, 3),
            "server_cpu_per_viewer_s": round(cpu_per_second / count, 3),
            "run_steps_per_s": round(steps_per_second, 1)}


def viewers_case(quick: bool) -> dict:
    counts = QUICK_VIEWERS if quick else VIEWERS
    rows = [measure(count, WATCH_SECONDS / (5 if quick else 1), seed) for seed, count in enumerate(counts)]
    return {"what": "server CPU seconds per second and time to first chart with 1, 10 and 30 viewers of one live "
                    "run", "measured": time.strftime("%Y-%m-%d %H:%M"), "quick": quick, "results": rows}


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}s"


def table(case: dict) -> str:
    lines = [f"P8: {case['what']}",
             f"  {'viewers':>7} {'first chart (median)':>21} {'(max)':>8} {'server CPU/s':>13} {'per viewer':>11} "
             f"{'run steps/s':>12}"]
    for r in case["results"]:
        reached = r.get("first_chart_reached", r["viewers"])
        late = "" if reached == r["viewers"] else f" ({r['viewers'] - reached} without a chart after " \
            f"{FIRST_CHART_SECONDS:.0f} s)"
        lines.append(f"  {r['viewers']:>7} {_seconds(r['first_chart_median_s']):>21} "
                     f"{_seconds(r['first_chart_max_s']):>8} {r['server_cpu_per_s']:>13.3f} "
                     f"{r['server_cpu_per_viewer_s']:>11.3f} {r.get('run_steps_per_s', float('nan')):>12.1f}{late}")
    return "\n".join(lines)
