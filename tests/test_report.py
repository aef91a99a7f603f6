"""results.json of the HTML report (no browser needed): sets become sorted lists, and a value JSON
cannot represent is named by its path and type before anything is written."""
from __future__ import annotations

import datetime
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyinverse.report.html import Figure, Section, Table, json_safe, render_html, write_report


def test_sets_become_sorted_lists_in_results_json(tmp_path):
    results = {"tags": {"sr4", "colour", "jpeg", "denoise"}, "sizes": frozenset({np.int64(32), 8, 16}),
               "pairs": {(2, 1), (1, 2)}, "mixed": {"a", 1, None, 2.5}, "nan": {float("nan"), 1.0},
               "nested": [{"empty": set()}]}
    report = write_report(tmp_path / "report", "t", "i", [], results)
    assert json.loads((report / "results.json").read_text()) == {
        "tags": ["colour", "denoise", "jpeg", "sr4"], "sizes": [8, 16, 32], "pairs": [[1, 2], [2, 1]],
        "mixed": [None, 2.5, 1, "a"],  # not comparable: ordered by type name, then repr
        "nan": [1.0, "nan"], "nested": [{"empty": []}]}


def test_set_order_does_not_depend_on_the_hash_seed():
    """Sets of strings iterate in an order that changes with PYTHONHASHSEED; the JSON must not."""
    code = ("import json; from pyinverse.report.html import json_safe; "
            "print(json.dumps(json_safe({'s': set('abcdefghij') | {1, 2}})))")
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                              env={**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": str(seed)}).stdout
               for seed in (0, 1, 2)}
    assert outputs == {json.dumps({"s": [1, 2, *"abcdefghij"]}) + "\n"}


def test_unserialisable_value_is_named_by_path_and_type(tmp_path):
    results = {"runs": [{"psnr": 30.5}, {"psnr": 31.0, "when": datetime.date(2024, 1, 2)}]}
    with pytest.raises(TypeError, match=r"write_report: results\['runs'\]\[1\]\['when'\] is of type date, "
                                        "which JSON cannot represent; expected numbers, strings"):
        write_report(tmp_path / "report", "t", "i", [], results)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(TypeError, match=r"json_safe: an item of value\['ids'\] is of type object"):
        json_safe({"ids": {object()}})
    with pytest.raises(TypeError, match=r"json_safe: value\[0\] is of type bytes"):
        json_safe([b"png"])
    # what JSON does represent is kept as it was
    assert json_safe({"a": (1, 2.5, "x", None, True), "b": np.float32(0.5), "c": float("inf")}) == \
        {"a": [1, 2.5, "x", None, True], "b": 0.5, "c": "inf"}


def test_cells_blocks_and_out_dir_are_checked(tmp_path):
    """numpy scalars are formatted as Python's; bad digits, PNG data or out_dir are named (no browser needed)."""
    rows = [[np.float32(0.123456789), 0.123456789], [np.float32("nan"), float("nan")], [np.int64(7), 7],
            [np.float64(-np.inf), -math.inf]]
    page = render_html("t", "i", [Section("s", [Table("t", ["a", "b"], rows)])])
    cells = re.findall(r"<td>(.*?)</td>", page)
    assert cells == ["0.1235", "0.1235", "n/a", "n/a", "7", "7", "-inf", "-inf"]
    with pytest.raises(ValueError, match="Table: 'digits' must be an int >= 0, got -1"):
        Table("t", ["a"], [[1.5]], digits=-1)
    assert "<td>2</td>" in render_html("t", "i", [Section("s", [Table("t", ["a"], [[1.5]], digits=0)])])
    with pytest.raises(TypeError, match="Figure: 'png' must be the PNG file's bytes .*, got str"):
        Figure("f", "not bytes")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for overwrite in (False, True):
        with pytest.raises(NotADirectoryError, match="write_report: 'out_dir' .*afile' is a file, not a report folder"):
            write_report(afile, "t", "i", [], {}, overwrite=overwrite)
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    # overwrite replaces a report folder, never one that holds anything else
    mine = tmp_path / "mine"
    (mine / "data").mkdir(parents=True)
    (mine / "notes.md").write_text("keep")
    (mine / "index.html").write_text("old")
    with pytest.raises(FileExistsError, match=r"holds files that are not a report's \(data, notes.md\)"):
        write_report(mine, "t", "i", [], {}, overwrite=True)
    assert (mine / "notes.md").read_text() == "keep" and (mine / "data").is_dir()
    write_report(tmp_path / "report2", "t", "i", [], {})
    write_report(tmp_path / "report2", "t2", "i", [], {"a": 1}, overwrite=True)
    assert json.loads((tmp_path / "report2" / "results.json").read_text()) == {"a": 1}


def test_write_report_refuses_a_folder_that_fills_while_it_writes(tmp_path, monkeypatch):
    """The checks come before the page is rendered; the final rename checks again, so a report
    another run put there meanwhile is not replaced (without overwrite), nor user files (with it)."""
    import pyinverse.report.html as html_module

    render = html_module.render_html

    def racing_render(*args, contents=None):
        target.mkdir(exist_ok=True)
        for name, text in contents.items():
            (target / name).write_text(text)
        return render(*args)

    for overwrite, contents, match in ((False, {"index.html": "theirs", "results.json": "{}"}, "already holds a report"),
                                       (True, {"notes.md": "keep"}, "holds files that are not a report's")):
        target = tmp_path / f"race{overwrite}"
        if overwrite:
            monkeypatch.setattr(html_module, "render_html", render)
            write_report(target, "t", "i", [], {"a": 0})
        monkeypatch.setattr(html_module, "render_html", lambda *a, contents=contents: racing_render(*a, contents=contents))
        with pytest.raises(FileExistsError, match=match):
            write_report(target, "t", "i", [], {"mine": 1}, overwrite=overwrite)
        for name, text in contents.items():
            assert (target / name).read_text() == text
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind
