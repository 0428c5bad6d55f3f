"""The static page: submitted strings are escaped, and in headless Chromium the table has one row per
checkpoint, sorts by clicking, and every plot draws its points."""

from __future__ import annotations

import os
import shutil

import pytest
from lb_helpers import edit_json

from saebench_scaffold import leaderboard as lb

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]
PAYLOAD = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LEAD_COPY = "/tmp/leaderboard_screenshot.png"


@pytest.fixture
def built_board(results_copy, tmp_path):
    """A board of the two checkpoints whose r = 24 architecture name carries a script."""
    for path in (results_copy / "batchtopk_r24").glob("*.json"):
        edit_json(path, lambda d: d["sae_cfg_dict"].update(architecture=PAYLOAD))
    board = tmp_path / "board"
    lb.submit(results_copy, "team_a", board)
    lb.build(board)
    return board


def test_submitted_strings_are_escaped(built_board):
    page = (built_board / "site" / "index.html").read_text()
    assert "window.__pwned" in page  # the text is there...
    assert "<script>window.__pwned" not in page and "<img src=x" not in page  # ...but never as markup
    assert "&lt;script&gt;window.__pwned" in page


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on PATH (apt-get install chromium; .ci/run installs it where apt is available)")


def test_page_in_headless_chromium(built_board, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')").sync_playwright
    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((built_board / "site" / "index.html").as_uri())
        page.wait_for_function("document.querySelectorAll('.plot .main-svg').length >= 5", timeout=30_000)
        rows = page.locator("#board tbody tr")
        assert rows.count() == 2
        for plot in ("dense", "fvu", "probe", "tpp", "ce"):
            n_points = page.locator(f"#plot-{plot} .point").count()
            assert n_points >= (1 if plot == "ce" else 2), f"plot {plot} drew {n_points} points"
        assert page.evaluate("window.__pwned") is None  # the submitted script never ran
        assert PAYLOAD in page.locator("#board tbody").inner_text()  # it shows as text
        header = page.locator("#board thead th", has_text="FVU").first
        col = page.locator("#board thead th").all_inner_texts().index(header.inner_text())
        values = []
        for _ in range(2):  # ascending, then descending
            header.locator("button").click()
            values.append([float(page.locator(f"#board tbody tr:nth-child({i}) td:nth-child({col + 1})").get_attribute("data-v"))
                           for i in (1, 2)])
        assert values[0] == sorted(values[0]) and values[1] == sorted(values[1], reverse=True) and values[0] != values[1]
        page.select_option("#filters select[data-col='3']", "24")
        assert page.locator("#shown").inner_text() == "1"
        page.select_option("#filters select[data-col='3']", "")
        shot = tmp_path / "leaderboard.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert not errors, errors
    assert shot.stat().st_size > 10_000
    if os.access("/tmp", os.W_OK):
        shutil.copyfile(shot, LEAD_COPY)


def test_serve_serves_the_page_and_the_result_files(built_board):
    import re
    import subprocess
    import sys
    import urllib.request

    cmd = [sys.executable, "-c", "from saebench_scaffold.cli import app; app()", "leaderboard", "serve", "--port", "0",
           "--board", str(built_board)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/site/index\.html", proc.stdout.readline()).group(0)
        assert b"saebench-scaffold leaderboard" in urllib.request.urlopen(url, timeout=30).read()
        core = url.replace("site/index.html", "submissions/team_a/batchtopk_r0/core.json")
        assert b'"eval_type_id": "core"' in urllib.request.urlopen(core, timeout=30).read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
