"""The static pages, built from copies of the committed board (no data folder, no language model):
submitted strings are escaped; in headless Chromium, at the committed 16 rows and at a synthetic 60,
every plot draws in both views, no legend, title or tick label leaves its plot or collides, the
grouped view's means are `claims`' per-configuration means, the claims page renders and links
back, and the table sorts and filters."""

from __future__ import annotations

import itertools
import os
import shutil
from statistics import mean

import pytest
from helpers.lb_helpers import committed_board, edit_json, synthetic_board

from saebench_scaffold import leaderboard as lb
from saebench_scaffold.leaderboard.claims import evaluate, load_checkpoints, t_interval
from saebench_scaffold.leaderboard.claims.figures import _value

PAYLOAD = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LEAD_COPY = "/tmp/leaderboard_screenshot.png"
CLAIMS_COPY = "/tmp/leaderboard_claims_screenshot.png"
PLOTS = ("dense", "fvu", "probe", "tpp", "ce")
PATHS = {  # page column -> the (task, category, key) claims reads
    "L0": ("core", "sparsity", "l0"), "dense>10%": ("core", "density", "dense_frac_gt_0.1"),
    "dense>1%": ("core", "density", "dense_frac_gt_0.01"), "FVU": ("core", "reconstruction_quality", "fvu"),
    "FVU typical": ("core", "typical_tokens", "fvu"), "probe top-1": ("sparse_probing", "sae", "sae_top_1_test_accuracy"),
    "TPP@20": ("tpp", "tpp_metrics", "tpp_threshold_20_total_metric"),
}


@pytest.fixture(scope="module")
def board16(tmp_path_factory):
    board = committed_board(tmp_path_factory.mktemp("board16"))
    lb.build(board)
    return board


@pytest.fixture(scope="module")
def board60(tmp_path_factory):
    board = synthetic_board(tmp_path_factory.mktemp("board60"), rows=60)
    lb.build(board)
    return board


@pytest.fixture(scope="module")
def payload_board(tmp_path_factory):
    """The committed board with one checkpoint's architecture name carrying a script."""
    board = committed_board(tmp_path_factory.mktemp("payload"))
    for path in (board / "submissions" / "bundled_baselines" / "batchtopk_r24").glob("*.json"):
        edit_json(path, lambda d: d["sae_cfg_dict"].update(architecture=PAYLOAD))
    lb.build(board)
    return board


def test_show_and_the_page_filter_by_recipe_version(board60):
    """Runs of an earlier recipe stay on the board, labelled, and both views can pick one recipe."""
    from saebench_scaffold.leaderboard.table import IDENTITY_HEADERS, records, select
    from saebench_scaffold.leaderboard.validate import TaskVersions

    recs = records(lb.load_board(board60, TaskVersions([])))
    assert {r["recipe"] for r in recs} == {"1", "2"}
    by_recipe = {v: select(recs, filters={"recipe": v}) for v in ("1", "2")}
    assert len(by_recipe["2"]) == 16 and len(by_recipe["1"]) == 44
    assert all(r["submission"] == "synthetic_2" for r in by_recipe["2"])
    assert lb.show(board60, filters={"recipe": "3"}) == "(no submissions match)"
    page = (board60 / "site" / "index.html").read_text()
    col = IDENTITY_HEADERS.index("recipe")
    assert f'<label>recipe <select data-col="{col}"><option value="">all</option><option value="1">1</option><option value="2">2</option></select>' in page


@pytest.mark.parametrize("page", ["index.html", "claims.html"])
def test_submitted_strings_are_escaped(payload_board, page):
    text = (payload_board / "site" / page).read_text()
    assert "window.__pwned" in text  # the text is there...
    assert "<script>window.__pwned" not in text and "<img src=x" not in text  # ...but never as markup
    assert "&lt;script&gt;window.__pwned" in text


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on PATH (apt-get install chromium; .ci/run installs it where apt is available)")


@pytest.fixture(scope="module")
def browser():
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')").sync_playwright
    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _open(browser, path):
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    return page, errors


def _show(page, view: str) -> None:
    if page.evaluate("document.body.dataset.drawn") != view:
        page.locator(f"#view input[value='{view}']").check()
    page.wait_for_function(f"document.body && document.body.dataset.drawn === '{view}'", timeout=60_000)


BOXES = """id => {
  const div = document.getElementById(id);
  const box = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
  const all = s => Array.from(div.querySelectorAll(s)).map(box).filter(b => b[2] > b[0] && b[3] > b[1]);
  return {div: box(div), legend: all('.legend .bg'), scrollbar: all('.legend .scrollbar'), modebar: all('.modebar'),
          title: all('.gtitle, .gtitle-subtitle'), axis_titles: all('.xtitle, .ytitle'),
          xticks: all('.xtick text'), yticks: all('.ytick text'), area: all('.nsewdrag'),
          points: div.querySelectorAll('.point').length};
}"""


def _inside(inner, outer, tol=0.5) -> bool:
    return inner[0] >= outer[0] - tol and inner[1] >= outer[1] - tol and inner[2] <= outer[2] + tol and inner[3] <= outer[3] + tol


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _layout_problems(page, plot: str, min_points: int) -> list[str]:
    page.hover(f"#plot-{plot} .nsewdrag")  # shows the mode bar
    b = page.evaluate(BOXES, f"plot-{plot}")
    problems = []
    if b["points"] < min_points:
        problems.append(f"drew {b['points']} points/bars, expected ≥ {min_points}")
    if len(b["legend"]) != 1 or not _inside(b["legend"][0], b["div"]):
        problems.append(f"legend {b['legend']} outside the plot {b['div']}")
    if b["scrollbar"]:
        problems.append("legend scrolls: some entries are hidden")
    for kind in ("area", "xticks", "yticks", "axis_titles", "title"):  # the legend covers none of these
        problems += [f"legend {leg} covers {kind} {box}" for leg in b["legend"] for box in b[kind] if _overlap(leg, box)]
    for kind in ("title", "axis_titles", "xticks", "yticks"):
        problems += [f"{kind} box {box} outside the plot {b['div']}" for box in b[kind] if not _inside(box, b["div"])]
    for kind in ("xticks", "yticks"):
        problems += [f"{kind} overlap: {p} {q}" for p, q in itertools.combinations(b[kind], 2) if _overlap(p, q)]
    if not b["modebar"] or not b["title"]:
        problems.append("no mode bar or no title drawn")
    problems += [f"title {t} under the mode bar {m}" for t in b["title"] for m in b["modebar"] if _overlap(t, m)]
    return [f"{plot}: {p}" for p in problems]


def _expected_groups(board) -> dict[tuple, list]:
    """Checkpoints by configuration, from claims' reader."""
    groups: dict[tuple, list] = {}
    for ck in load_checkpoints(board):
        groups.setdefault((ck.architecture, ck.rank, ck.tokens, ck.recipe), []).append(ck)
    return groups


def _figure(page, plot: str) -> list[dict]:
    return page.evaluate("id => document.getElementById(id).data.map(t => ({type: t.type, x: t.x, y: t.y, meta: t.meta || {}, "
                         "error_y: t.error_y || {}}))", f"plot-{plot}")


def _check_means(page, board) -> dict[tuple, dict]:
    """The grouped view's means (read from the drawn figures) against claims', to 1e-9; returns them."""
    expected = _expected_groups(board)
    shown: dict[tuple, dict] = {}
    for plot in PLOTS:
        means = [t for t in _figure(page, plot) if t["meta"].get("role") == "mean"]
        assert means, plot
        for t in means:
            meta = t["meta"]
            key = (meta["architecture"], meta["rank"], meta["tokens"], meta["recipe"])
            members = expected[key]
            if plot == "ce":
                for cond, y, up in zip(meta["conditions"], t["y"], t["error_y"]["array"], strict=True):
                    values = [v for ck in members if (v := _value(ck, ("ce_ablation", cond, "ce_ratio"))) is not None]
                    assert y == pytest.approx(mean(values), abs=1e-9), (key, cond)
                    if len(values) >= 2:
                        assert y + up == pytest.approx(t_interval(values)[1], abs=1e-9)
                    shown.setdefault(key, {})[("ce", cond)] = y
                continue
            pairs = [(_value(ck, PATHS["L0"]), _value(ck, PATHS[meta["column"]])) for ck in members]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            assert meta["n"] == len(pairs)
            assert t["y"][0] == pytest.approx(mean(y for _, y in pairs), abs=1e-9), (key, meta["column"])
            assert t["x"][0] == pytest.approx(mean(x for x, _ in pairs), abs=1e-9), (key, "L0")
            if len(pairs) >= 2:
                low, high, _ = t_interval([y for _, y in pairs])
                assert t["y"][0] + t["error_y"]["array"][0] == pytest.approx(high, abs=1e-9)
                assert t["y"][0] - t["error_y"]["arrayminus"][0] == pytest.approx(low, abs=1e-9)
            shown.setdefault(key, {})[meta["column"]] = t["y"][0]
    assert set(shown) == set(expected)  # one mark per configuration, none missing
    return shown


@pytest.mark.parametrize("rows", [16, 60])
def test_page_layout_and_grouped_means_in_chromium(request, browser, rows, tmp_path):
    board = request.getfixturevalue(f"board{rows}")
    page, errors = _open(browser, board / "site" / "index.html")
    _show(page, "grouped")  # the default: configurations have several seeds
    assert page.locator("#view input[value='grouped']").is_checked()
    assert page.locator("#board tbody tr").count() == rows
    groups = _expected_groups(board)
    assert len(groups) == {16: 6, 60: 18}[rows]
    shown = _check_means(page, board)
    problems = []
    for plot in PLOTS:
        problems += _layout_problems(page, plot, min_points=len(groups) + (0 if plot == "ce" else rows))
    shot = tmp_path / "grouped.png"
    page.screenshot(path=str(shot), full_page=True)  # the default, grouped view
    _show(page, "checkpoints")
    for plot in PLOTS:
        problems += _layout_problems(page, plot, min_points=rows)
    assert not problems, "\n".join(problems)
    if rows == 16:
        # claims' own table: each paired claim's r=0 / r=24 means are the grouped view's
        claim_rows = evaluate(load_checkpoints(board))
        for row in claim_rows:
            column = {"dense_latents": "dense>10%", "sparse_probing": "probe top-1", "tpp": "TPP@20"}.get(row["claim"])
            r0, r24 = ((row["architecture"], r, row["training_tokens"], "1") for r in (0, 24))
            if column:
                assert row["reference_mean"] == pytest.approx(shown[r0][column], abs=1e-9)
                assert row["tested_mean"] == pytest.approx(shown[r24][column], abs=1e-9)
            elif row["claim"] == "ce_scaffold_vs_pca":
                assert row["tested_mean"] == pytest.approx(shown[r24][("ce", "scaffold_removed")], abs=1e-9)
        page.click("nav a[href='claims.html']")
        page.wait_for_url("**/claims.html")
        assert page.title().endswith("the paper's claims")
        assert page.locator("table").first.locator("tbody tr").count() == len(claim_rows)
        assert page.locator("td.verdict").count() == len(claim_rows)
        # one forest plot per claim, each drawn: a marker (and interval) per setting, the paper's value where stated
        page.wait_for_function("document.body && document.body.dataset.drawn === 'forests'")
        drawn = {}
        for row in claim_rows:
            if row.get("difference_mean") is not None:
                drawn.setdefault(row["claim"], []).append(row)
        assert page.locator("div.forest").count() == len(drawn) >= 5
        for key, group in drawn.items():
            plot = page.locator(f"#forest-{key}")
            assert plot.locator(".main-svg").count() >= 1, key
            assert plot.locator(".scatterlayer .trace").first.locator(".point").count() == len(group), key
            if any(r.get("paper_effect") is not None for r in group):
                assert plot.locator(".scatterlayer .trace").count() == 2, key  # ours + the paper
            box = plot.bounding_box()
            assert box and box["height"] >= 200 and box["width"] >= 300, key
        claims_shot = tmp_path / "claims.png"
        page.screenshot(path=str(claims_shot), full_page=True)
        page.click("nav a[href='index.html']")
        page.wait_for_url("**/index.html")
        page.wait_for_function("document.body && document.body.dataset.drawn === 'grouped'")
        if os.access("/tmp", os.W_OK):
            shutil.copyfile(shot, LEAD_COPY)
            shutil.copyfile(claims_shot, CLAIMS_COPY)
    elif os.access("/tmp", os.W_OK):
        shutil.copyfile(shot, "/tmp/leaderboard_screenshot_60rows.png")
    page.close()
    assert not errors, errors
    assert shot.stat().st_size > 10_000


def test_page_in_headless_chromium(browser, payload_board):
    """Escaping in the browser, sorting, filtering, both views drawn without errors."""
    page, errors = _open(browser, payload_board / "site" / "index.html")
    _show(page, "grouped")
    rows = page.locator("#board tbody tr")
    assert rows.count() == 16
    assert page.evaluate("window.__pwned") is None  # the submitted script never ran
    assert PAYLOAD in page.locator("#board tbody").inner_text()  # it shows as text
    assert any(PAYLOAD in t for t in page.locator("#plot-ce .legendtext").all_text_contents())  # and in the legend
    header = page.locator("#board thead th", has_text="FVU").first
    col = page.locator("#board thead th").all_inner_texts().index(header.inner_text())
    values = []
    for _ in range(2):  # ascending, then descending
        header.locator("button").click()
        values.append([float(page.locator(f"#board tbody tr:nth-child({i}) td:nth-child({col + 1})").get_attribute("data-v"))
                       for i in range(1, 17)])
    assert values[0] == sorted(values[0]) and values[1] == sorted(values[1], reverse=True) and values[0] != values[1]
    page.select_option("#filters select[data-col='3']", "24")
    assert page.locator("#shown").inner_text() == "8"
    page.select_option("#filters select[data-col='3']", "")
    assert page.locator("#shown").inner_text() == "16"
    page.select_option("#filters select[data-col='5']", "1")  # the recipe column: the board's runs are version 1
    assert page.locator("#shown").inner_text() == "16"
    page.select_option("#filters select[data-col='5']", "")
    _show(page, "checkpoints")
    assert page.locator("#plot-ce .point").count() >= 16
    page.goto((payload_board / "site" / "claims.html").as_uri())
    assert PAYLOAD in page.locator("table").first.inner_text()
    assert page.evaluate("window.__pwned") is None
    page.close()
    assert not errors, errors


def test_serve_serves_the_pages_and_the_result_files(board16):
    import re
    import subprocess
    import sys
    import urllib.request

    cmd = [sys.executable, "-c", "from saebench_scaffold.cli import app; app()", "leaderboard", "serve", "--port", "0",
           "--board", str(board16)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/site/index\.html", proc.stdout.readline()).group(0)
        assert b"saebench-scaffold leaderboard" in urllib.request.urlopen(url, timeout=30).read()
        assert b"claims against this board" in urllib.request.urlopen(url.replace("index.html", "claims.html"), timeout=30).read()
        core = url.replace("site/index.html", "submissions/bundled_baselines/batchtopk_r0/core.json")
        assert b'"eval_type_id": "core"' in urllib.request.urlopen(core, timeout=30).read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_downstream_plot_shows_each_checkpoints_retained_accuracy(tmp_path):
    """The committed board's downstream results (recipe 2's seed-0 submission): one bar group per
    checkpoint in the per-checkpoint view, its heights the results' summary retained accuracies."""
    import json
    import re

    from helpers.lb_helpers import COMMITTED

    board16 = tmp_path / "board"
    shutil.copytree(COMMITTED / "recipe2_baselines", board16 / "submissions" / "recipe2_baselines")
    lb.build(board16)
    page = (board16 / "site" / "index.html").read_text()
    assert 'id="plot-downstream"' in page
    fig = json.loads(re.search(r'id="fig-downstream-checkpoints"[^>]*>(.*?)</script>', page, re.S).group(1))
    results = sorted((board16 / "submissions").glob("*/*/downstream.json"))
    assert results and len(fig["data"]) == len(results)
    heights = sorted(round(y, 9) for trace in fig["data"] for y in trace["y"])
    recorded = []
    for path in results:
        s = json.loads(path.read_text())["eval_result_metrics"]["summary"]
        recorded += [round(s[f"{k}_retained"], 9) for k in ("spliced", "scaffold", "pca", "aligned", "random", "zero")
                     if s.get(f"{k}_retained") is not None]
    assert heights == sorted(recorded)
