"""The self-contained HTML report: tables and PNG figures inlined (base64), no external files,
so ``index.html`` opens offline and can be mailed as one file; ``results.json`` holds every number.

The report folder is written as a whole: built in a temporary sibling folder, then renamed into
place, so a crash or a bad input never leaves half a report.
"""
from __future__ import annotations

import base64
import errno
import html
import io
import json
import math
import numbers
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .._io import current_umask


@dataclass
class Table:
    """A table: ``rows`` of cells (numbers are formatted with ``digits`` significant digits)."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    note: str = ""
    digits: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.digits, bool) or not isinstance(self.digits, numbers.Integral) or self.digits < 0:
            raise ValueError(f"Table: 'digits' must be an int >= 0, got {self.digits!r}")


@dataclass
class Figure:
    """A PNG figure (bytes) with a caption."""

    title: str
    png: bytes
    caption: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.png, (bytes, bytearray)):
            raise TypeError(f"Figure: 'png' must be the PNG file's bytes (e.g. figure_to_png(figure)), got "
                            f"{type(self.png).__name__}")


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    text: str = ""


def figure_to_png(figure) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        value = float(value)  # numpy floats (np.float32 is no float) are formatted as Python's
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def _render_block(block: Any) -> str:
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in block.columns)
        body = "".join("<tr>" + "".join(f"<td>{_cell(v, block.digits)}</td>" for v in row) + "</tr>" for row in block.rows)
        note = f'<p class="note">{html.escape(block.note)}</p>' if block.note else ""
        return f"<h3>{html.escape(block.title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        caption = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
        return (f'<figure><h3>{html.escape(block.title)}</h3><img alt="{html.escape(block.title)}" '
                f'src="data:image/png;base64,{data}">{caption}</figure>')
    raise TypeError(f"report: cannot render a {type(block).__name__}")


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note,figcaption{color:#555;font-size:.9em}section{margin-bottom:2em}
"""


def render_html(title: str, intro: str, sections: Sequence[Section]) -> str:
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        parts.extend(_render_block(block) for block in section.blocks)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def json_safe(value: Any, *, where: str = "json_safe", name: str = "value") -> Any:
    """NaN/inf become strings, numpy scalars/arrays plain Python, sets and frozensets lists (sorted
    when their items compare, else by type name and ``repr``, so the file does not depend on the
    set's iteration order): results.json stays standard JSON.

    Raises ``TypeError`` naming ``where`` and the path of a value JSON cannot represent (e.g.
    ``value['runs'][2]``) and its type, instead of the json module's message without either.
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v, where=where, name=f"{name}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, where=where, name=f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [json_safe(v, where=where, name=f"an item of {name}") for v in value]
        try:
            return sorted(items)
        except TypeError:  # mixed types (1 and 'a'): still one order for every run
            return sorted(items, key=lambda v: (type(v).__name__, repr(v)))
    if hasattr(value, "tolist"):
        return json_safe(value.tolist(), where=where, name=name)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError(f"{where}: {name} is of type {type(value).__name__}, which JSON cannot represent; expected "
                    "numbers, strings, None, lists, tuples, dicts, sets or numpy arrays")


def sections_to_json(sections: Sequence[Section]) -> list:
    """Sections as JSON-ready data (figures base64), for :func:`sections_from_json`."""
    def block(b: Any) -> dict:
        if isinstance(b, Table):
            return {"table": {"title": b.title, "columns": list(b.columns), "rows": [list(r) for r in b.rows], "note": b.note,
                              "digits": b.digits}}
        if isinstance(b, Figure):
            return {"figure": {"title": b.title, "png": base64.b64encode(b.png).decode("ascii"), "caption": b.caption}}
        raise TypeError(f"sections_to_json: cannot serialise a {type(b).__name__} block")
    return [{"title": s.title, "text": s.text, "blocks": [block(b) for b in s.blocks]} for s in sections]


def sections_from_json(data: Any) -> list[Section]:
    """Inverse of :func:`sections_to_json`; ``ValueError`` on anything else."""
    try:
        sections = []
        for s in data:
            blocks = []
            for b in s["blocks"]:
                (kind, v), = b.items()
                if kind == "table":
                    blocks.append(Table(str(v["title"]), [str(c) for c in v["columns"]], [list(r) for r in v["rows"]],
                                        str(v["note"]), int(v["digits"])))
                elif kind == "figure":
                    blocks.append(Figure(str(v["title"]), base64.b64decode(v["png"], validate=True), str(v["caption"])))
                else:
                    raise ValueError(f"unknown block kind {kind!r}")
            sections.append(Section(str(s["title"]), blocks, str(s["text"])))
        return sections
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"sections_from_json: not a serialised report section ({type(exc).__name__}: {exc})") from None


_REPORT_FILES = ("index.html", "results.json")  # all that write_report writes


def foreign_files(folder: Path) -> list[str]:
    """What in ``folder`` write_report did not write (overwrite replaces a report, never a folder
    of the user's files)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in _REPORT_FILES or not p.is_file())


def _refuse_foreign(folder: Path, others: list[str]) -> None:
    listed = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    raise FileExistsError(f"write_report: {folder} holds files that are not a report's ({listed}); overwrite "
                          f"replaces only a folder holding {' and '.join(_REPORT_FILES)}; choose another folder")


def write_report(out_dir: str | os.PathLike, title: str, intro: str, sections: Sequence[Section],
                 results: dict, *, overwrite: bool = False) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/results.json`` as one atomic folder.

    Raises ``FileExistsError`` if ``out_dir`` is a folder with files in it and ``overwrite`` is
    false (also when it fills while the report is written: the final rename refuses a non-empty
    folder), and ``NotADirectoryError`` if it is a file (never replaced, even with ``overwrite``).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"write_report: 'out_dir' {str(out_dir)!r} is a file, not a report folder; "
                                 "choose another path")
    taken = f"{out_dir} already holds a report; choose another folder or pass overwrite=True"
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(taken)
        others = foreign_files(out_dir)
        if others:
            _refuse_foreign(out_dir, others)
    page = render_html(title, intro, sections)
    numbers = json.dumps(json_safe(results, where="write_report", name="results"), indent=2, allow_nan=False) + "\n"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (staging / "index.html").write_text(page, encoding="utf-8")
        (staging / "results.json").write_text(numbers, encoding="utf-8")
        os.chmod(staging, 0o777 & ~current_umask())
        if overwrite and out_dir.exists():
            # Set the old report aside and look again: files that arrived since the check stay.
            retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.rename(out_dir, retired / "report")
            others = foreign_files(retired / "report")
            if others:
                os.rename(retired / "report", out_dir)
                retired.rmdir()
                _refuse_foreign(out_dir, others)
            _rename_into(staging, out_dir, taken)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            _rename_into(staging, out_dir, taken)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _rename_into(staging: Path, out_dir: Path, taken: str) -> None:
    """rename(2) onto nothing or an empty folder; one that is not empty (filled meanwhile) is refused."""
    try:
        os.rename(staging, out_dir)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(taken) from None
        raise
