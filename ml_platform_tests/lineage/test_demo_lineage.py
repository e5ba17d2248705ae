"""``make demo``'s last step: the recorded lineage of the champion it served, printed and written as JSON."""

from __future__ import annotations

import json

from ml_platform.cli import _demo_lineage


def test_the_demo_ends_with_the_champions_complete_lineage(lineage_world, capsys) -> None:
    w = lineage_world
    _demo_lineage(w.settings, w.instance)
    printed = capsys.readouterr().out
    assert "Lineage of champion (alias)" in printed and "complete" in printed, printed[-3000:]
    assert w.bento_tag in printed and "raw partitions" in printed
    out = w.settings.storage_root / "lineage" / "champion.json"
    assert f"The same chain as JSON: {out}" in " ".join(printed.split())
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["model"]["version"] == w.version
    assert [b["tag"] for b in data["bentos"]] == [w.bento_tag]
    # and the evidence bundle of the same version, both files, paths printed
    folder = w.settings.storage_root / "evidence"
    html, bundle = sorted(folder.glob("*.evidence.html")), sorted(folder.glob("*.evidence.json"))
    assert len(html) == 1 and len(bundle) == 1
    assert str(html[0]) in printed and str(bundle[0]) in printed
    assert json.loads(bundle[0].read_text())["model"]["version"] == w.version
