"""End to end: ``reptile demo`` in a subprocess, the page in headless Chromium (Playwright).

Needs Debian's chromium (``apt-get install -y chromium``) and the Python ``playwright`` package;
skips with the reason when either is missing. With ``REPTILE_DEMO_SCREENSHOTS=DIR`` the
screenshots are also copied to DIR (``docs/img`` for the README).
"""
from __future__ import annotations

import json
import math
import os
import queue
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("REPTILE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage"]

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                            "(pip install playwright)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow


@contextmanager
def demo_server(*extra: str):
    """Run ``reptile demo --port 0`` and yield its address; the process is always stopped."""
    proc = subprocess.Popen([sys.executable, "-m", "reptile", "demo", "--port", "0", *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            pytest.fail("reptile demo printed no address within 60 s")
        if not line.startswith("Reptile demo at http://127.0.0.1:"):
            pytest.fail(f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}")
        yield line.split()[3]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        except Exception as e:  # a chromium that cannot start here is an environment problem
            pytest.skip(f"chromium at {CHROMIUM} does not start: {e}")
        yield b
        b.close()


@contextmanager
def open_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1180, "height": 1000}, device_scale_factor=1)
    page = context.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(url)
        yield page, requests, errors
    finally:
        context.close()


def draw(page, selector: str, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw strokes given in fractions of the canvas with the mouse."""
    page.locator(selector).scroll_into_view_if_needed()
    box = page.locator(selector).bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=3)
        page.mouse.up()


CIRCLE = [[(0.5 + 0.3 * math.cos(t / 20 * 2 * math.pi), 0.5 + 0.3 * math.sin(t / 20 * 2 * math.pi)) for t in range(21)]]
ZIGZAG = [[(0.2, 0.25), (0.8, 0.25), (0.2, 0.75), (0.8, 0.75)]]
CROSS = [[(0.5, 0.15), (0.5, 0.85)], [(0.15, 0.5), (0.85, 0.5)], [(0.25, 0.8), (0.75, 0.8)]]


def probs_of(page, selector: str) -> list[float]:
    return json.loads(page.get_attribute(selector, "data-probs"))


def save_screenshot(locator, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    locator.screenshot(path=str(path))
    target = os.environ.get("REPTILE_DEMO_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return path


def test_drawing_and_sine_panels_end_to_end(browser, tmp_path):
    with demo_server() as url, open_page(browser, url) as (page, requests, errors):
        page.wait_for_selector('#fewshot[data-state="waiting"]', timeout=30000)
        page.wait_for_selector('#sine[data-state="done"]', timeout=30000)
        # -- few-shot: three classes, then the query copied from class 2
        for i, shape in enumerate((CIRCLE, ZIGZAG, CROSS)):
            draw(page, f"#cell-{i}", shape)
        assert page.get_attribute("#fewshot", "data-state") == "waiting"  # query still empty
        draw(page, "#cell-3", ZIGZAG)
        page.wait_for_selector('#fewshot[data-state="done"]', timeout=30000)
        meta, rand = probs_of(page, "#result-meta"), probs_of(page, "#result-random")
        assert len(meta) == 3 and abs(sum(meta) - 1) < 1e-6 and abs(sum(rand) - 1) < 1e-6
        assert max(range(3), key=meta.__getitem__) == 1, meta
        assert page.get_attribute("#result-meta", "data-predicted") == "1"
        assert page.locator("#result-meta .bar-row").count() == 3
        shot = save_screenshot(page.locator("#fewshot"), tmp_path, "demo-fewshot.png")
        assert shot.stat().st_size > 10_000
        # the copy button: the query becomes class 3's drawing
        page.locator('.cell[data-index="2"] button[data-action="copy"]').click()
        try:
            page.wait_for_function(
                "() => document.querySelector('#fewshot').dataset.state === 'done'"
                " && document.querySelector('#result-meta').dataset.predicted === '2'", timeout=30000)
        except Exception:
            pytest.fail(f"state {page.get_attribute('#fewshot', 'data-state')}, probs {page.get_attribute('#result-meta', 'data-probs')}")
        # erasing a training cell stops the prediction until it is drawn again
        page.locator('.cell[data-index="0"] button[data-action="erase"]').click()
        page.wait_for_selector('#fewshot[data-state="waiting"]', timeout=10000)
        assert "class 1" in page.text_content("#fewshot-status")
        assert page.get_attribute("#result-meta", "data-probs") is None

        # -- sine: click five points, both plots get their four curves
        page.locator("#sine-meta").scroll_into_view_if_needed()
        box = page.locator("#sine-meta").bounding_box()
        for fx, fy in ((0.15, 0.3), (0.3, 0.55), (0.5, 0.7), (0.7, 0.45), (0.85, 0.25)):
            page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_function("() => document.querySelector('#sine-random').dataset.points === '5'"
                               " && document.querySelector('#sine').dataset.state === 'done'", timeout=30000)
        for sel in ("#sine-meta", "#sine-random"):
            assert page.get_attribute(sel, "data-curves") == "4"
        # the last curve's colour (#08306b) is on the canvas
        dark = page.evaluate("""() => {
            const c = document.querySelector('#sine-meta'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - 8) < 20 && Math.abs(d[i+1] - 48) < 20 && Math.abs(d[i+2] - 107) < 20) n++;
            return n; }""")
        assert dark > 100
        assert "Fine-tuned on 5 points" in page.text_content("#sine-status")
        page.click("#sine-sample")
        page.wait_for_function("() => document.querySelector('#sine-random').dataset.points === '10'"
                               " && document.querySelector('#sine').dataset.state === 'done'", timeout=30000)
        assert "true function" in page.text_content("#sine-status")
        save_screenshot(page.locator("#sine"), tmp_path, "demo-sine.png")
        # nothing but the demo's own origin was asked for; no script errors
        assert requests and all(r.startswith(url) for r in requests), requests
        assert not errors, errors


def test_malformed_and_missing_weights_show_a_message(browser, tmp_path):
    wd = tmp_path / "weights"
    wd.mkdir()
    (wd / "fewshot.json").write_text('{"format": "reptile-lab-demo-weights", "version": 1, "kind": "fewsh')
    with demo_server("--weights-dir", str(wd)) as url, open_page(browser, url) as (page, _, errors):
        page.wait_for_selector('#fewshot[data-state="error"]', timeout=30000)
        page.wait_for_selector('#sine[data-state="error"]', timeout=30000)
        few = page.text_content("#fewshot-status")
        sine = page.text_content("#sine-status")
        assert "weights/fewshot.json" in few and "not valid JSON" in few, few
        assert "weights/sine.json" in sine and "404" in sine and "reptile export-demo" in sine, sine
        assert page.locator("#fewshot-status.error").is_visible()
        assert not [e for e in errors if "404" not in e], errors
