import base64
import itertools
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from augbench.analysis.report import write_report
from augbench.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("Grid", "Results (mean ± std over pretraining seeds)", "Correlation with the reference task 'shape'",
            "Task × task Spearman correlation", "Effect of each design-space switch",
            "Invariance probes per method and depth", "Protocols and budgets")


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.images, self.headings, self.external = 0, [], [], []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tables += tag == "table"
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("script", "link") or (tag == "img" and not attrs["src"].startswith("data:")):
            self.external.append(tag)
        self._in_heading = tag == "h2"

    def handle_data(self, data):
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False


@pytest.fixture
def report(filled_store):
    return write_report(filled_store.path.parent)


def test_html_report_is_self_contained_with_tables_and_png_figures(report):
    html_path, _ = report
    page = _Collector()
    page.feed(html_path.read_text())
    assert page.external == []  # nothing to fetch: no scripts, stylesheets or linked images
    for section in SECTIONS:
        assert section in page.headings
    assert "Effect of the pretraining data" not in page.headings  # the synthetic study names no dataset pairs
    assert page.tables >= 8
    assert len(page.images) == 3  # reference scatter, correlation heatmap, probe cosine per depth
    for source in page.images:
        header, data = source.split(",", 1)
        assert header == "data:image/png;base64"
        assert base64.b64decode(data).startswith(PNG_MAGIC)


def test_html_tables_carry_the_analysis(report):
    text = report[0].read_text()
    assert "moco_v2 · photo" in text  # results table column
    assert "method.negatives, method.predictor.enabled" in text  # the switch between moco_v2 and byol
    assert "The same over all tasks scored in percent, per pretraining dataset" in text
    assert re.search(r"<th>hue</th>\s*<td>9</td>\s*<td>-1.00</td>", text)  # 9 encoders, rho = -1 vs shape
    assert "18 of 18 cells finished" in text


def test_markdown_report_links_figures_written_beside_it(report):
    _, markdown_path = report
    markdown = markdown_path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == 3
    for link in links:
        assert (markdown_path.parent / link).read_bytes().startswith(PNG_MAGIC)
    assert "| hue " in markdown and "## Protocols and budgets" in markdown


def test_dataset_comparisons_add_the_pretraining_data_section(filled_store):
    import yaml

    config = yaml.safe_load(filled_store.meta()["config"])
    filled_store.set_meta(config=yaml.safe_dump({**config, "dataset_comparisons": [["digits", "photo"]]}))
    html_path, _ = write_report(filled_store.path.parent)
    page = _Collector()
    page.feed(html_path.read_text())
    assert "Effect of the pretraining data" in page.headings
    assert "anova_p" in html_path.read_text()


def test_report_command_writes_both_files(filled_store, tmp_path):
    output = tmp_path / "out" / "study.html"
    assert main(["report", str(filled_store.path.parent), "--output", str(output)]) == 0
    assert output.is_file() and output.with_suffix(".md").is_file()


def test_report_of_a_missing_store_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results store" in capsys.readouterr().out


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs Chromium (.ci/run), so there a missing browser fails the test instead of skipping it.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
WINDOW = (1280, 900)
# Records console messages, page errors and failed resource loads, then, once the page has loaded, what a reader
# sees: every table, figure and section heading with its box on the page, and how wide the page is laid out.
_PROBE = """<script>
const problems = [];
for (const level of ["error", "warn"]) {
  const original = console[level];
  console[level] = (...args) => { problems.push(level + ": " + args.join(" ")); original(...args); };
}
window.addEventListener("error", e => problems.push("error: " + (e.message || e.target.src || e.target.tagName)), true);
window.addEventListener("load", () => {
  const images = [...document.images];
  const box = e => { const r = e.getBoundingClientRect();
    return {tag: e.tagName, top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right,
            width: r.width, height: r.height, visible: getComputedStyle(e).visibility !== "hidden" &&
            getComputedStyle(e).display !== "none"}; };
  const out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify({images: images.length,
    decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    tables: document.querySelectorAll("table").length,
    rows: document.querySelectorAll("table tr").length,
    blocks: [...document.querySelectorAll("h1, h2, table, img")].map(box),
    headings: [...document.querySelectorAll("h2")].map(h => h.innerText),
    page_width: document.documentElement.scrollWidth, window_width: innerWidth,
    page_height: document.documentElement.scrollHeight,
    problems: problems});
  document.body.appendChild(out);
});
</script>"""


def _chromium(*arguments: str, height: int = WINDOW[1]) -> subprocess.CompletedProcess:
    # The first start on a machine builds font caches (a minute or two); .ci/run starts it once before the tests.
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--window-size={WINDOW[0]},{height}", *arguments],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason="headless Chromium is not installed (Debian: apt-get "
                    "install chromium; CI installs it); the html.parser tests above still check the HTML")
def test_chromium_renders_the_tables_and_figures_laid_out_without_console_errors(report, tmp_path):
    import json

    from PIL import Image

    assert CHROMIUM is not None, "CI must have Chromium: .ci/run installs it with apt-get"
    page = tmp_path / "check.html"
    page.write_text(report[0].read_text().replace("<head>", "<head>" + _PROBE, 1))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri()).stdout
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
    assert found, f"the page did not finish loading in Chromium; DOM starts {dom[:300]!r}"
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                       .replace("&gt;", ">"))
    assert check["problems"] == []
    assert check["images"] == check["decoded"] == 3
    assert check["tables"] >= 8 and check["rows"] > 50
    for section in SECTIONS:
        assert section in check["headings"]
    # Laid out as a reader sees it: every table and figure visible, with a real size, inside the page's width,
    # one below the other in reading order, and the page no wider than the window.
    blocks = check["blocks"]
    assert check["page_width"] <= check["window_width"]
    for block in blocks:
        assert block["visible"] and block["height"] > 0 and block["width"] > 0, block
        assert block["left"] >= 0 and block["right"] <= check["window_width"], block
    figures = [block for block in blocks if block["tag"] == "IMG"]
    assert all(figure["width"] >= 300 and figure["height"] >= 150 for figure in figures), figures
    for above, below in itertools.pairwise(blocks):
        assert below["top"] >= above["bottom"] - 1, (above, below)  # no overlap
    # The whole page as a screenshot: each figure's box holds a drawn plot, each table's box text and rules.
    screenshot = tmp_path / "report.png"
    _chromium(f"--screenshot={screenshot}", page.as_uri(), height=check["page_height"])
    with Image.open(screenshot) as image:
        assert image.size == (WINDOW[0], check["page_height"])
        grey = np.asarray(image.convert("L")).astype(np.int16)
    for block in blocks:
        if block["tag"] not in ("IMG", "TABLE"):
            continue
        top, bottom = round(block["top"]), round(block["bottom"])
        pixels = grey[top:bottom, round(block["left"]) : round(block["right"])]
        assert pixels.size and (pixels < 128).mean() > 0.002, block  # dark ink: text, rules, plotted marks
        assert len(np.unique(pixels)) > 16, block  # anti-aliased drawing, not a flat fill


def test_results_that_do_not_beat_the_random_encoder_are_marked_and_tasks_at_random_warned(tmp_path):
    from scipy import stats as scipy_stats

    from augbench.analysis.report import build_sections
    from augbench.analysis.store import load_results
    from tests.analysis.conftest import fill_store

    fill_store(tmp_path / "bench" / "results.sqlite", random=True).close()
    results = load_results(tmp_path / "bench")
    _, sections = build_sections(tmp_path / "bench")
    table = next(content for section in sections if section.title.startswith("Results")
                 for kind, content in section.parts if kind == "table")
    assert "random · none" in table.columns
    marked = 0
    for (task, protocol), row in table.iterrows():
        rows = results[(results["task"] == task) & (results["protocol"] == protocol)]
        random = rows[rows["method"] == "random"]["value"]
        for (method, dataset), values in rows[rows["method"] != "random"].groupby(["method", "pretrain_dataset"]):
            # Welch's interval from scipy, computed apart from augbench's own
            low = scipy_stats.ttest_ind(values["value"], random, equal_var=False).confidence_interval(0.95).low
            assert row[f"{method} · {dataset}"].endswith("≈ random") == (low <= 0), (task, protocol, method, dataset)
            marked += low <= 0
        assert "≈ random" not in row["random · none"]
    assert 0 < marked < len(table) * 9  # some results, not all
    html_path, markdown_path = write_report(tmp_path / "bench")
    for page in (html_path.read_text(), markdown_path.read_text()):
        assert "≈ random" in page
        # hue falls as the encoders improve: none beats the random encoder under either protocol
        assert "warning: on hue (linear) no encoder beats the random encoder" in page
        assert "warning: on hue (knn)" in page and "warning: on shape" not in page
        assert "hue at random" in page  # its correlation with the reference task is flagged
        assert "random: resnet18 width 0.25, randomly initialised from each seed, not trained" in page
