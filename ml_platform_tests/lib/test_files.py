"""``write_atomic``: the whole new content or the old one, never a half-written file or a stray temp."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ml_platform.lib.files import write_atomic


def test_writes_whole_replaces_and_sets_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "state.json"
    write_atomic(target, "old\n")
    write_atomic(target, "new\n", mode=0o644)
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]  # no temp file left


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, "old\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "half \udc80 written")  # a lone surrogate cannot be encoded
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
