"""docs/security.md against the lock, offline.

``make audit`` (pip-audit over constraints.txt) needs the network and is not part of the suite;
what is checked here is that its recorded result cannot drift from the lock silently: the page
exists and names its audit date, the pin count it states is the lock's, and every package in its
findings table is pinned in constraints.txt at the version the table states.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SECURITY_MD = ROOT / "docs" / "security.md"
CONSTRAINTS = ROOT / "constraints.txt"
MAKEFILE = ROOT / "Makefile"

FINDINGS_HEADER = ("package", "installed version", "vulnerability id", "fixed in", "decision")
AUDIT_DATE = re.compile(r"^Audit date:\s*(\d{4}-\d{2}-\d{2})\s*$", re.MULTILINE)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*$")


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt line is not a plain == pin: {raw!r}"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _cells(line: str) -> list[str]:
    return [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]


def _findings_rows(text: str) -> list[list[str]]:
    """The data rows of the findings table (the table whose header is FINDINGS_HEADER)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("|") and tuple(c.lower() for c in _cells(line)) == FINDINGS_HEADER:
            rows = []
            for row in lines[i + 2 :]:  # skip the |---| separator
                if not row.lstrip().startswith("|"):
                    break
                rows.append(_cells(row))
            return rows
    pytest.fail(f"no findings table with header {FINDINGS_HEADER} in {SECURITY_MD}")


@pytest.fixture(scope="module")
def doc() -> str:
    assert SECURITY_MD.is_file(), "docs/security.md is missing"
    return SECURITY_MD.read_text()


def test_names_a_valid_audit_date(doc: str) -> None:
    match = AUDIT_DATE.search(doc)
    assert match, "docs/security.md must have a line 'Audit date: YYYY-MM-DD'"
    dt.date.fromisoformat(match.group(1))


def test_stated_pin_count_is_the_locks(doc: str) -> None:
    match = re.search(r"`constraints\.txt`, (\d+) pins", doc)
    assert match, "docs/security.md must state how many pins of constraints.txt it audited"
    assert int(match.group(1)) == len(_lock()), "constraints.txt changed since the audit: rerun make audit"


def test_findings_match_the_lock(doc: str) -> None:
    lock = _lock()
    for row in _findings_rows(doc):
        assert len(row) == len(FINDINGS_HEADER), f"findings row has {len(row)} cells: {row}"
        package, version, vuln_id, _fixed_in, decision = row
        assert vuln_id and decision, f"findings row without an id or a decision: {row}"
        name = canonicalize_name(package)
        assert name in lock, f"{package} is in the findings table but not pinned in constraints.txt"
        assert lock[name] == version, (
            f"{package}: the findings table says {version}, constraints.txt pins {lock[name]}"
        )


def test_make_audit_runs_pip_audit_on_the_lock() -> None:
    text = MAKEFILE.read_text()
    assert re.search(r"^\.PHONY:.*\baudit\b", text, re.MULTILINE)
    recipe = re.search(r"^audit:.*\n((?:\t.*\n?)+)", text, re.MULTILINE)
    assert recipe, "Makefile has no audit target"
    assert "pip-audit -r constraints.txt" in recipe.group(1)
    assert "--strict" in recipe.group(1), "without --strict, unauditable pins pass silently"
