"""Atomic writes: the file appears whole or not at all, and nothing is overwritten silently."""
import os
import stat

import pytest

from pyinverse._io import atomic_write, atomic_write_json, atomic_write_text


def test_write_then_refuse_to_overwrite(tmp_path):
    target = tmp_path / "sub" / "report.txt"
    atomic_write_text(target, "first")
    assert target.read_text() == "first"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        atomic_write_text(target, "second")
    assert target.read_text() == "first"
    atomic_write_text(target, "second", overwrite=True)
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.txt"]  # no temporaries left


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "weights.bin"

    def broken(temporary):
        temporary.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert list(tmp_path.iterdir()) == []


def test_permissions_follow_umask(tmp_path):
    target = atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_umask_is_read_without_changing_it_and_overwrite_keeps_the_mode(tmp_path):
    from pyinverse._io import current_umask

    previous = os.umask(0o027)
    try:
        assert current_umask() == 0o027 and os.umask(0o027) == 0o027  # read, not set to 0 meanwhile
        private = atomic_write_text(tmp_path / "p.txt", "x")
        assert stat.S_IMODE(private.stat().st_mode) == 0o640
        os.chmod(private, 0o600)
        atomic_write_text(private, "y", overwrite=True)  # replaced, not widened to 0o640
        assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_text() == "y"
    finally:
        os.umask(previous)


def test_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError, match="not JSON compliant"):
        atomic_write_json(tmp_path / "r.json", {"x": float("nan")})
    assert not (tmp_path / "r.json").exists()
