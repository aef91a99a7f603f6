"""The HTML report in a real headless browser: it loads with no console errors and shows its images.

How the browser is driven: Chromium's DevTools protocol over ``--remote-debugging-pipe`` (JSON
messages separated by NUL bytes on the browser's file descriptors 3 and 4, Puppeteer's
``pipe: true``). That needs the ``chromium`` binary and the standard library, nothing else: no
chromedriver, no selenium (nor its Selenium Manager reaching for the network), no websocket
client, no port to pick or leak. Selenium's ``get_log("browser")`` is this same protocol's
``Runtime`` and ``Log`` events relayed by chromedriver; here they are read first-hand:
``console.error``/``console.assert`` calls, uncaught exceptions and the browser's own error log
(a resource that failed to load, a blocked request) all count as console errors.

"Shows its images" is checked three ways for every ``<img>``: ``complete && naturalWidth > 0``
(the browser decoded it), the natural size equals the PNG's, and the pixels the
browser decoded (drawn on a canvas, summed per row and per column) equal those of the PNG written,
decoded by Pillow. The last check matters: Chromium shows a PNG whose data is damaged past its
header, or cut short, as a partial image with ``naturalWidth > 0`` (the negative controls below
prove both the weak and the strong check can fail).

The tests on the report of ``pyinverse run --quick`` share the session's one run (``quick_run`` in
conftest.py, also used by test_run.py); the rest takes about 20 s. Skipped when no Chromium is installed (``.ci/run`` installs Debian's ``chromium``); the environment
variable ``PYINVERSE_CHROMIUM`` names another Chromium or Chrome binary.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest


def find_chromium() -> str | None:
    named = os.environ.get("PYINVERSE_CHROMIUM")
    if named:
        return shutil.which(named)  # None (the module skips, naming it) when it is no program
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = find_chromium()
if os.name != "posix":
    pytest.skip("the DevTools pipe (file descriptors 3 and 4) needs a POSIX system", allow_module_level=True)
if CHROMIUM is None:
    pytest.skip(f"no headless browser: PYINVERSE_CHROMIUM={os.environ['PYINVERSE_CHROMIUM']!r} is no program"
                if os.environ.get("PYINVERSE_CHROMIUM") else
                "no headless browser: install Debian's chromium (apt-get install chromium; .ci/run does) "
                "or set PYINVERSE_CHROMIUM", allow_module_level=True)

from PIL import Image  # noqa: E402

from pyinverse.cli import main  # noqa: E402
from pyinverse.report.html import Figure, Section, Table, figure_to_png, write_report  # noqa: E402

TIMEOUT = 90.0  # seconds for one protocol answer; generous, CI machines are busy
DATA_PNG = "data:image/png;base64,"

# Everything the tests read from the loaded page, in one evaluation. The pixel sums are integers
# below 2**53 for any figure the report holds, so they cross the protocol exactly.
PAGE_PROBE = r"""(async () => {
  const images = [...document.images];
  const decoded = await Promise.all(images.map(img => img.decode().then(() => true, () => false)));
  const pixels = img => {
    if (!img.complete || img.naturalWidth === 0) return null;
    const width = img.naturalWidth, height = img.naturalHeight;
    const canvas = document.createElement('canvas');
    canvas.width = width; canvas.height = height;
    const context = canvas.getContext('2d', {willReadFrequently: true});
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, width, height).data;
    const rows = new Array(height).fill(0), columns = new Array(width).fill(0);
    for (let y = 0, i = 0; y < height; y++) {
      for (let x = 0; x < width; x++, i += 4) {
        const sum = data[i] + data[i + 1] + data[i + 2] + data[i + 3];
        rows[y] += sum; columns[x] += sum;
      }
    }
    return {rows, columns};
  };
  const texts = selector => [...document.querySelectorAll(selector)].map(e => e.textContent);
  const viewport = document.querySelector('meta[name="viewport"]');
  return {
    url: location.href, readyState: document.readyState,
    title: document.title,
    charset: document.characterSet,
    viewport: viewport ? viewport.content : null,
    h1: texts('h1'), h2: texts('h2'), h3: texts('h3'),
    tables: [...document.querySelectorAll('table')].map(t => [...t.rows].map(r => [...r.cells].map(c => c.textContent))),
    images: images.map((img, k) => ({
      complete: img.complete, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
      shownWidth: img.getBoundingClientRect().width, alt: img.alt, dataPng: img.src.startsWith('data:image/png;base64,'),
      decoded: decoded[k], pixels: pixels(img),
    })),
  };
})()"""


_FD_TRAMPOLINE = """
import fcntl, os, sys
ends = [int(fd) for fd in sys.argv[1:3]]
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in ends]  # clear of 3 and 4 first
for fd in ends:
    os.close(fd)
for fd, target in zip(moved, (3, 4)):
    os.dup2(fd, target)
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


class Chromium:
    """A headless Chromium driven over the DevTools pipe; one browser, a fresh tab per page."""

    FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--mute-audio",
             "--window-size=1280,1024")

    def __init__(self, binary: str):
        self.profile = Path(tempfile.mkdtemp(prefix="pyinverse-chromium-"))
        self.log_path = self.profile / "chromium.log"
        to_browser, self._write_fd = os.pipe()
        self._read_fd, from_browser = os.pipe()
        command = [binary, *self.FLAGS, f"--user-data-dir={self.profile / 'profile'}", "about:blank"]
        # The browser reads commands on fd 3 and writes answers on fd 4: a small Python trampoline
        # moves the pipe ends there and execs it (no preexec_fn, unsafe in a process with threads).
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _FD_TRAMPOLINE, str(to_browser), str(from_browser), *command],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, pass_fds=(to_browser, from_browser))
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._last_id = 0
        self._events: list[dict] = []
        self.version = self.call("Browser.getVersion")["product"]

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium sent no answer in {TIMEOUT:.0f} s; its log:\n{self.log_tail()}")
            ready, _, _ = select.select([self._read_fd], [], [], left)
            if ready:
                chunk = os.read(self._read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the DevTools pipe (exit status {self.process.poll()}); "
                                       f"its log:\n{self.log_tail()}")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._write_fd, data):]
        deadline = time.monotonic() + TIMEOUT
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self._events.append(answer)

    def _wait_for(self, accept, start: int = 0) -> int:
        """The index in the events of the first one from ``start`` on that ``accept`` takes."""
        deadline = time.monotonic() + TIMEOUT
        index = start
        while True:
            for index in range(index, len(self._events)):
                if accept(self._events[index]):
                    return index
            index = len(self._events)
            self._events.append(self._receive(deadline))

    def open(self, path: Path) -> dict:
        """Load ``path`` from a file:// URL in a fresh tab: PAGE_PROBE's answer plus ``console``, a
        list of ``(level, text)`` for every console message, uncaught exception and browser log entry."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        try:
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable", session)
            url = Path(path).resolve().as_uri()
            navigation = self.call("Page.navigate", session, url=url)
            assert "errorText" not in navigation, navigation
            # the load event of this document (not of the tab's first about:blank)
            def main_frame_navigated(event):
                frame = event.get("params", {}).get("frame", {})
                return (event.get("sessionId") == session and event.get("method") == "Page.frameNavigated"
                        and "parentId" not in frame and frame.get("url") == url)

            navigated = self._wait_for(main_frame_navigated)
            self._wait_for(lambda e: e.get("sessionId") == session and e.get("method") == "Page.loadEventFired",
                           navigated)
            answer = self.call("Runtime.evaluate", session, expression=PAGE_PROBE, returnByValue=True,
                               awaitPromise=True)
            assert "exceptionDetails" not in answer, answer["exceptionDetails"]
            page = answer["result"]["value"]
            assert page["url"] == url and page["readyState"] == "complete", (page["url"], page["readyState"])
            page["console"] = [_console_entry(e) for e in self._events
                               if e.get("sessionId") == session and _console_entry(e) is not None]
            return page
        finally:
            self._events = [e for e in self._events if e.get("sessionId") not in (session, None)]
            self.call("Target.closeTarget", targetId=target)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._read_fd)
        os.close(self._write_fd)
        shutil.rmtree(self.profile, ignore_errors=True)


def _console_entry(event: dict) -> tuple[str, str] | None:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled":
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
        return ("error" if params["type"] in ("error", "assert") else params["type"]), text
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return "error", details.get("exception", {}).get("description") or details.get("text", "")
    if method == "Log.entryAdded":
        entry = params["entry"]
        return entry["level"], f"{entry['text']} {entry.get('url', '')}".strip()
    return None


def console_errors(page: dict) -> list[str]:
    return [text for level, text in page["console"] if level == "error"]


def png_payloads(html_text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]*)"', html_text)]


def image_problems(page: dict, html_text: str, pngs: list[bytes] | None = None) -> list[str]:
    """Why each ``<img>`` is not shown as ``pngs`` (default: the PNGs inlined in ``html_text``); empty
    when every image is."""
    payloads = png_payloads(html_text) if pngs is None else pngs
    problems = []
    if len(page["images"]) != html_text.count(DATA_PNG):
        problems.append(f"{len(page['images'])} <img> in the page, {html_text.count(DATA_PNG)} inline PNGs in the file")
    for index, (image, png) in enumerate(zip(page["images"], payloads)):
        name = f"image {index} ({image['alt']!r})"
        if not (image["complete"] and image["naturalWidth"] > 0 and image["decoded"]):
            problems.append(f"{name} not decoded: complete={image['complete']}, "
                            f"naturalWidth={image['naturalWidth']}, decode() resolved={image['decoded']}")
            continue
        if not image["dataPng"] or image["shownWidth"] <= 0:
            problems.append(f"{name} not an inline PNG or not shown (width {image['shownWidth']})")
        try:
            expected = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), dtype=np.int64)
        except Exception as error:  # a damaged PNG, which the browser may still show in part
            problems.append(f"{name}: a damaged PNG, which Pillow cannot decode ({error})")
            continue
        if (image["naturalHeight"], image["naturalWidth"]) != expected.shape[:2]:
            problems.append(f"{name} shown {image['naturalWidth']}x{image['naturalHeight']}, "
                            f"the PNG is {expected.shape[1]}x{expected.shape[0]}")
            continue
        rows, columns = expected.sum(axis=(1, 2)), expected.sum(axis=(0, 2))
        if image["pixels"]["rows"] != rows.tolist() or image["pixels"]["columns"] != columns.tolist():
            bad = int(np.count_nonzero(np.asarray(image["pixels"]["rows"]) != rows))
            problems.append(f"{name}: the pixels shown differ from the PNG's in {bad} of {len(rows)} rows")
    return problems


class _Headings(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: dict[str, list[str]] = {"title": [], "h1": [], "h2": [], "h3": []}
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag in self.found:
            self._open = tag
            self.found[tag].append("")

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None

    def handle_data(self, data):
        if self._open:
            self.found[self._open][-1] += data


def source_headings(html_text: str) -> dict[str, list[str]]:
    parser = _Headings()
    parser.feed(html_text)
    return parser.found


def json_numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in json_numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in json_numbers(v)]
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return [float(value)]
    return []


NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|n/a|-?inf", re.IGNORECASE)


def shown_as(token: str, numbers: list[float]) -> bool:
    """Whether ``token``, a number as the report prints it, is one of ``numbers`` rounded."""
    if token == "n/a":
        return any(math.isnan(n) for n in numbers)
    shown = float(token)
    if math.isinf(shown) or re.fullmatch(r"-?\d+", token):
        return shown in numbers
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2]) - int(exponent or 0)
    half_step = 0.5 * 10.0 ** -decimals * (1 + 1e-9)
    return any(abs(n - shown) <= half_step for n in numbers if math.isfinite(n))


def assert_loads_cleanly(page: dict, html_text: str) -> None:
    assert console_errors(page) == [], page["console"]
    assert image_problems(page, html_text) == []
    assert page["charset"] == "UTF-8"
    assert page["viewport"] and "width=device-width" in page["viewport"]
    # What the browser parsed is what the file says: no heading swallowed by broken markup.
    headings = source_headings(html_text)
    assert [page["title"]] == headings["title"] and all(page[h] == headings[h] for h in ("h1", "h2", "h3"))
    assert all(text.strip() for h in ("h1", "h2", "h3") for text in page[h])


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures: one browser and one `pyinverse run --quick` for the module.

@pytest.fixture(scope="module")
def browser():
    try:
        chromium = Chromium(CHROMIUM)
    except (OSError, RuntimeError, TimeoutError) as error:
        pytest.fail(f"{CHROMIUM} is installed but does not start headless: {error}")
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def quick_report(quick_run):
    return quick_run[0] / "report"  # the session's one `pyinverse run --quick` (conftest.py)


@pytest.fixture(scope="module")
def quick_page(browser, quick_report):
    return browser.open(quick_report / "index.html")


# ---------------------------------------------------------------------------------------------------------------------
# The report `pyinverse run --quick` writes.

@pytest.mark.slow
def test_quick_report_has_no_console_errors(quick_page):
    assert console_errors(quick_page) == [], quick_page["console"]


@pytest.mark.slow
def test_quick_report_shows_every_image(quick_page, quick_report):
    html_text = (quick_report / "index.html").read_text(encoding="utf-8")
    assert len(quick_page["images"]) == html_text.count(DATA_PNG) >= 1
    assert all(image["complete"] and image["naturalWidth"] > 0 for image in quick_page["images"])
    assert image_problems(quick_page, html_text) == []
    # every figure has its title as the alternative text and as the heading above it
    assert all(image["alt"] and image["alt"] in quick_page["h3"] for image in quick_page["images"])


@pytest.mark.slow
def test_quick_report_title_and_sections(quick_page, quick_report):
    html_text = (quick_report / "index.html").read_text(encoding="utf-8")
    assert_loads_cleanly(quick_page, html_text)
    assert quick_page["title"] == "pyinverse study" and quick_page["h1"] == ["pyinverse study"]
    assert {"Calibrated uncertainty", "Validity"} <= set(quick_page["h2"])
    assert len(quick_page["h2"]) == html_text.count("<section>")
    results = json.loads((quick_report / "results.json").read_text())
    tasks = [*results["flow_posterior"]["tasks"], *results["cimle"]["tasks"]]
    assert len(quick_page["h2"]) >= 2 + len(tasks)


@pytest.mark.slow
def test_quick_report_first_table_numbers_are_in_results_json(quick_page, quick_report):
    results = json.loads((quick_report / "results.json").read_text())
    numbers = json_numbers(results)
    header, *rows = quick_page["tables"][0]
    assert header == ["quantity", "value"] and rows
    for quantity, value in rows:
        tokens = NUMBER.findall(value)
        assert tokens, (quantity, value)
        missing = [t for t in tokens if not shown_as(t, numbers)]
        assert not missing, f"{quantity}: {value!r} shows {missing}, not in results.json"
    # and the other way: the headline numbers of results.json are in that table, as printed
    shown = " ".join(value for _, value in rows)
    uq = results["uq"]
    for key in ("lambda_hat", "held_out_risk", "held_out_coverage", "mean_width", "ood_risk"):
        assert f"{uq[key]:.4g}" in shown, key


# ---------------------------------------------------------------------------------------------------------------------
# Smaller reports: `write_report` with real figures, and `pyinverse evaluate`.

def _small_report(folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyinverse.report import save_uncertainty_figure

    rng = np.random.default_rng(0)
    figure, axes = plt.subplots(figsize=(4, 3))
    axes.plot(np.linspace(0, 1, 50), rng.random(50), label="σ = 0.1")
    axes.set_title("coverage — α ≤ 0.1")
    axes.legend()
    mean = rng.random((3, 24, 24))
    save_uncertainty_figure(folder / "map.png", mean, 0.2 * rng.random((24, 24)), truth=mean, title="map")
    sections = [
        Section("Numbers & <symbols>", [Table("σ, α ≤ 0.1 — “quoted”", ["name", "value"],
                                               [["a < b & c", 0.123456], ["nan", float("nan")], ["inf", float("inf")]],
                                               note="ünïcödé 🙂")]),
        Section("Figures", [Figure("a plot", figure_to_png(figure), "plot caption"),
                            Figure("an uncertainty map", (folder / "map.png").read_bytes())], text="two figures"),
    ]
    return write_report(folder / "report", "small report — ü", "intro <not a tag>", sections, {"value": 0.123456})


def test_small_report_loads_cleanly(browser, tmp_path):
    report = _small_report(tmp_path)
    html_text = (report / "index.html").read_text(encoding="utf-8")
    page = browser.open(report / "index.html")
    assert_loads_cleanly(page, html_text)
    assert len(page["images"]) == 2
    # the text is shown exactly as given: the charset is honoured and nothing is parsed as markup
    assert page["title"] == "small report — ü"
    assert page["h2"] == ["Numbers & <symbols>", "Figures"]
    assert page["tables"][0] == [["name", "value"], ["a < b & c", "0.1235"], ["nan", "n/a"], ["inf", "inf"]]


def test_evaluate_report_loads_cleanly(browser, tmp_path, capsys):
    import torch

    from pyinverse.physics import Downsample

    rng = np.random.default_rng(3)
    truth = rng.random((4, 1, 16, 16), dtype=np.float32)
    inputs = Downsample(2).A(torch.from_numpy(truth)).numpy()
    samples = np.clip(truth[None] + 0.05 * rng.standard_normal((3, *truth.shape)), 0, 1).astype(np.float32)
    for name, array in (("samples", samples), ("inputs", inputs), ("truth", truth)):
        np.save(tmp_path / f"{name}.npy", array)
    out = tmp_path / "out"
    code = main(["evaluate", "--samples", str(tmp_path / "samples.npy"), "--inputs", str(tmp_path / "inputs.npy"),
                 "--truth", str(tmp_path / "truth.npy"), "--operator", "downsample:2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    html_text = (out / "report" / "index.html").read_text(encoding="utf-8")
    page = browser.open(out / "report" / "index.html")
    assert_loads_cleanly(page, html_text)
    assert len(page["images"]) >= 1 and page["tables"]


# ---------------------------------------------------------------------------------------------------------------------
# Negative controls: the checks above do fail on a broken page.

def _corrupt_first_image(html_text: str, how: str) -> str:
    match = re.search(r'src="data:image/png;base64,([^"]*)"', html_text)
    start, end = match.span(1)
    middle = start + (end - start) // 8 * 4  # a whole number of base64 quads in
    if how == "header":  # the PNG signature and IHDR overwritten: nothing to decode
        return html_text[:start] + "A" * 64 + html_text[start + 64:]
    if how == "data":  # 600 bytes of the compressed pixels zeroed, past the header
        return html_text[:middle] + "A" * 800 + html_text[middle + 800:]
    assert how == "truncated"  # the second half of the file lost
    return html_text[:middle] + html_text[end:]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["header", "data", "truncated"])
def test_corrupted_image_is_detected(browser, quick_report, tmp_path, how):
    original = (quick_report / "index.html").read_text(encoding="utf-8")
    html_text = _corrupt_first_image(original, how)
    copy = tmp_path / "index.html"
    copy.write_text(html_text, encoding="utf-8")
    page = browser.open(copy)
    # against the figures the report was written with, and against the PNGs the damaged copy holds
    problems = image_problems(page, html_text, png_payloads(original))
    own = image_problems(page, html_text)
    assert len(problems) == len(own) == 1 and problems[0].startswith("image 0 ") and own[0].startswith("image 0 ")
    first = page["images"][0]
    assert console_errors(page) == []  # a broken data: image is no console error: the image check is needed
    if how == "header":
        # the browser's own verdict: not decoded
        assert first["complete"] and first["naturalWidth"] == 0 and not first["decoded"]
        assert "not decoded" in problems[0] and problems == own
    elif first["naturalWidth"] > 0:
        # Chromium (150) shows what it could decode: complete, naturalWidth > 0 and decode() pass, the
        # pixels do not; the damaged PNG the copy holds is reported as such
        assert "pixels shown differ" in problems[0] and "damaged PNG" in own[0]
    assert all(image["naturalWidth"] > 0 for image in page["images"][1:])


def test_script_error_and_missing_resource_are_console_errors(browser, tmp_path):
    report = _small_report(tmp_path)
    html_text = (report / "index.html").read_text(encoding="utf-8")
    broken = html_text.replace("</body>", "<script>console.error('report check'); notDefined();</script>"
                                          '<img alt="missing" src="missing.png"></body>')
    (report / "broken.html").write_text(broken, encoding="utf-8")
    page = browser.open(report / "broken.html")
    errors = console_errors(page)
    assert any("report check" in e for e in errors), errors
    assert any("notDefined is not defined" in e for e in errors), errors
    assert any("ERR_FILE_NOT_FOUND" in e and "missing.png" in e for e in errors), errors
    assert len(page["images"]) == 3 and page["images"][2]["naturalWidth"] == 0
    assert any("inline PNGs" in p for p in image_problems(page, broken))
    # the clean page, in the same browser, has none of them
    assert console_errors(browser.open(report / "index.html")) == []
