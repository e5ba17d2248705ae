"""Writing the evidence bundle: the JSON file and the self-contained HTML page (sections, tables)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from ml_platform.lineage.evidence.schema import Evidence
from ml_platform.lineage.evidence_svg import render_svg

# ---------------------------------------------------------------------------------- writing


def write_evidence(evidence: Evidence, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<model>-v<version>.evidence.html`` and ``.json`` into ``out_dir``; return both paths.

    The JSON is written first; the HTML's footer carries the sha256 of the JSON file's bytes.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{evidence.model['name']}-v{evidence.model['version']}")
    json_path = folder / f"{stem}.evidence.json"
    html_path = folder / f"{stem}.evidence.html"
    data = evidence.to_json().encode("utf-8")
    json_path.write_bytes(data)
    html_path.write_bytes(
        render_html(evidence, hashlib.sha256(data).hexdigest(), json_path.name).encode("utf-8")
    )
    return html_path, json_path


# ---------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1a1a1a;
max-width:1800px}
h1{margin-bottom:4px}h2{border-bottom:2px solid #3b6ea5;padding-bottom:3px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;
vertical-align:top;font-size:13px}th{background:#eef2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.ok{color:#1d6b2f;font-weight:600}.bad{color:#b42318;font-weight:600}.warn{color:#9a5b00;font-weight:600}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0}
.banner.ok{background:#e6f4ea;border:1px solid #1d6b2f}
.banner.bad{background:#fdecea;border:1px solid #b42318}.note{color:#555;font-style:italic}
.graph{overflow-x:auto;border:1px solid #ddd;padding:6px;background:#fff}
img.plot{max-width:560px;border:1px solid #ddd;margin:4px}
footer{margin-top:40px;border-top:1px solid #ccc;padding-top:8px;font-size:12px;color:#444}
"""


def _e(value: Any) -> str:
    return escape("-" if value is None else str(value), quote=True)


def _yes(value: bool | None, yes: str = "passed", no: str = "FAILED", none: str = "not recorded") -> str:
    if value is None:
        return f'<span class="warn">{_e(none)}</span>'
    return f'<span class="ok">{_e(yes)}</span>' if value else f'<span class="bad">{_e(no)}</span>'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table whose cells are already HTML (escape with :func:`_e`)."""
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append(
            "<tr>"
            + "".join(
                f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row)
            )
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _num(value: Any) -> str:
    return _e(f"{value:.4f}" if isinstance(value, float) else value)


def _pre(value: Any) -> str:
    return f"<pre>{_e(json.dumps(value, indent=2, ensure_ascii=False))}</pre>"


def render_html(evidence: Evidence, sha256: str, json_name: str) -> str:
    """The bundle as one self-contained HTML page (``sha256``: of the JSON file named ``json_name``)."""
    ev = evidence
    m = ev.model
    title = f"Evidence bundle: {m['name']} v{m['version']}"
    on_path = [g for g in ev.missing if g.get("on_path")]
    beside = [g for g in ev.missing if not g.get("on_path")]
    disagree = [c for c in ev.consistency if not c.get("ok")]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="evidence-json-sha256" content="{_e(sha256)}">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        f"<div>Generated at <b>{_e(ev.generated_at)}</b> from <code>{_e(m.get('start'))}</code>"
        f" (resolved: {_e(m.get('resolved'))}). Schema <code>{_e(ev.schema)}</code>.</div>",
    ]
    if ev.complete:
        parts.append(
            '<div class="banner ok" id="completeness"><b>Lineage chain complete</b>: every link from the'
            " deployment to the raw files was recorded and every cross-check agrees"
            f" ({len(ev.consistency)} cross-checks).</div>"
        )
    else:
        parts.append(
            '<div class="banner bad" id="completeness"><b>Lineage chain INCOMPLETE</b>:'
            f" {len(on_path)} missing link(s) on the chain, {len(disagree)} cross-check disagreement(s).<ul>"
            + "".join(
                f"<li><b>MISSING {_e(g['hop'])}</b>: {_e(g['reason'])} ({_e(g['ref'])})</li>" for g in on_path
            )
            + "".join(f"<li><b>{_e(c['name'])}</b> disagrees: {_e(c['detail'])}</li>" for c in disagree)
            + "</ul></div>"
        )
    if beside:
        parts.append(
            '<div class="banner bad"><b>Not recorded beside the chain</b>:<ul>'
            + "".join(f"<li>{_e(g['hop'])}: {_e(g['reason'])} ({_e(g['ref'])})</li>" for g in beside)
            + "</ul></div>"
        )
    parts.append(
        _table(
            ("", ""),
            [
                ("model", _e(f"{m['name']} v{m['version']}")),
                ("trained by", f"<code>{_e(m.get('delay_model'))}</code>"),
                ("training window", _e(m.get("training_window"))),
                ("weights digest", f"<code>{_e(m.get('weights_digest'))}</code>"),
                ("MLflow run", f"<code>{_e(m.get('mlflow_run_id'))}</code>"),
                ("registry source", f"<code>{_e(m.get('registry_source'))}</code>"),
                ("aliases now", _e(", ".join(m.get("aliases_now") or []) or "none")),
                ("Bentos", "<br>".join(f"<code>{_e(t)}</code>" for t in m.get("bentos") or []) or "none"),
                ("serving now", "<br>".join(_e(s) for s in m.get("serving") or []) or "not serving"),
            ],
        )
        + "</header>"
    )
    parts += _graph_section(ev)
    parts += _metrics_section(ev)
    parts += _checks_section(ev)
    parts += _data_section(ev)
    parts += _approvals_section(ev)
    parts += _reproduce_section(ev)
    parts.append('<section id="cross-checks"><h2>7. Cross-checks between records</h2>')
    parts.append(
        _table(
            ("check", "result", "detail"),
            [(_e(c["name"]), _yes(c["ok"], "agrees", "DISAGREES"), _e(c["detail"])) for c in ev.consistency],
        )
        if ev.consistency
        else '<p class="note">no cross-check was possible (nothing to compare)</p>'
    )
    parts.append("</section>")
    parts.append(
        '<section id="chain"><h2>Appendix: the whole lineage chain</h2><details><summary>the chain as'
        " <code>mlp lineage --json</code> writes it (every partition with its storage pin, run, code"
        f" version and checks)</summary>{_pre(ev.chain)}</details></section>"
    )
    parts.append(
        f'<footer>JSON: <code>{_e(json_name)}</code>, sha256 <code id="json-sha256">{_e(sha256)}</code>'
        " (of the JSON file's bytes: <code>sha256sum</code> it to match this page to its JSON). Generated by"
        " <code>mlp evidence</code> from the recorded metadata only.</footer></body></html>"
    )
    return "\n".join(parts) + "\n"


def _graph_section(ev: Evidence) -> list[str]:
    return [
        '<section id="graph"><h2>1. Lineage graph</h2>',
        '<p class="note">From the recorded <code>lineage/upstream</code> links, run ids and pins. Many'
        " partitions of one asset are one node (hover a node for its details); blue: recorded, amber: a"
        " check or gate failed, red dashed: not recorded, grey dashed: nothing there.</p>",
        f'<div class="graph">{render_svg(ev.graph)}</div></section>',
    ]


def _metrics_section(ev: Evidence) -> list[str]:
    out = ['<section id="metrics"><h2>2. Metrics</h2>']
    for e in ev.metrics["evaluations"]:
        out.append(
            f"<h3>{_e(e['evaluation'])}: gates {_yes(e['passed'])}</h3><p>holdout {_e(e['holdout'])};"
            f" champion then: {_e(e['champion_version'])}; run <code>{_e(e.get('run_id'))}</code></p>"
        )
        out.append(
            _table(
                ("holdout metric", "model", "naive baseline", "champion"),
                [
                    (_e(r["metric"]), _num(r["model"]), _num(r["baseline"]), _num(r["champion"]))
                    for r in e["table"]
                ],
                numeric=(1, 2, 3),
            )
        )
    for note in ev.metrics["notes"]:
        out.append(f'<p class="note">{_e(note)}</p>')
    if ev.metrics["training"]:
        out.append("<h3>Training (delay_model metadata)</h3>")
        out.append(_table(("key", "value"), [(_e(k), _e(v)) for k, v in ev.metrics["training"].items()]))
    if ev.metrics["mlflow_run_metrics"]:
        out.append("<h3>MLflow run metrics</h3>")
        out.append(
            _table(
                ("metric", "value"),
                [(_e(k), _num(v)) for k, v in ev.metrics["mlflow_run_metrics"].items()],
                (1,),
            )
        )
    if ev.plots:
        out.append("<h3>Evaluation plots (as the evaluation rendered them)</h3><div>")
        for p in ev.plots:
            out.append(
                f'<figure style="display:inline-block"><img class="plot" alt="{_e(p["name"])}"'
                f' src="data:image/png;base64,{_e(p["base64"])}"><figcaption>{_e(p["name"])}'
                f" ({_e(p['source'])}, sha256 {_e(p['sha256'][:12])})</figcaption></figure>"
            )
        out.append("</div>")
    out.append("</section>")
    return out


def _checks_section(ev: Evidence) -> list[str]:
    out = ['<section id="checks"><h2>3. Check results</h2><h3>Gates (blocking)</h3>']
    if not ev.checks["gates"]:
        out.append('<p class="note">not recorded: no evaluation judged this version, so no gate ran</p>')
    for g in ev.checks["gates"]:
        out.append(f"<p><code>{_e(g['evaluation'])}</code>: {_yes(g['passed'])}</p>")
        out.append(
            _table(
                ("gate", "result", "detail", "asset check"),
                [
                    (
                        _e(gate.get("name")),
                        _yes(gate.get("passed")),
                        _e(gate.get("detail")),
                        _yes(
                            next(
                                (c["passed"] for c in g["asset_checks"] if c["name"] == gate.get("name")),
                                None,
                            ),
                            none="no check evaluation",
                        ),
                    )
                    for gate in g["gates"]
                ],
            )
        )
    out.append("<h3>Asset checks of the chain's partitions</h3>")
    rows = []
    for a in ev.checks["assets"]:
        if not a["checks"]:
            rows.append(
                (
                    _e(a["asset"]),
                    _e(a["partitions"]),
                    '<span class="note">declares no checks</span>',
                    "",
                    "",
                    "",
                )
            )
        for c in a["checks"]:
            rows.append(
                (
                    _e(a["asset"]),
                    _e(a["partitions"]),
                    _e(c["name"]),
                    f'<span class="ok">{c["passed"]}</span>',
                    f'<span class="{"bad" if c["failed"] else "ok"}">{c["failed"]}</span>',
                    f'<span class="{"warn" if c["not_recorded"] else "ok"}">{c["not_recorded"]}</span>',
                )
            )
    out.append(
        _table(("asset", "partitions", "check", "passed", "failed", "not recorded"), rows, (1, 3, 4, 5))
    )
    failures = [(a["asset"], f) for a in ev.checks["assets"] for f in a["failures"]]
    if failures:
        out.append("<h4>Failures</h4>")
        out.append(
            _table(
                ("asset", "partition", "check", "severity", "description"),
                [
                    (_e(a), _e(f["partition"]), _e(f["check"]), _e(f["severity"]), _e(f["description"]))
                    for a, f in failures
                ],
            )
        )
    else:
        out.append('<p class="ok">No check of the chain\'s partitions failed.</p>')
    out.append("</section>")
    return out


_SEVERITY = {"ok": "ok", "warn": "warn"}


def _drift_rows(entries: Sequence[Mapping[str, Any]]) -> str:
    return _table(
        ("day", "severity", "against", "errors", "warnings", "report"),
        [
            (
                _e(d["partition"]),
                f'<span class="{_SEVERITY.get(str(d["severity"]), "bad")}">{_e(d["severity"])}</span>',
                _e(f"v{d['model_version']} ({d['reference_window']})"),
                "<br>".join(_e(f["describe"]) for f in d["errors"]) or "-",
                "<br>".join(_e(f["describe"]) for f in d["warnings"]) or "-",
                f"<code>{_e(d['report'])}</code>",
            )
            for d in entries
        ],
    )


def _data_section(ev: Evidence) -> list[str]:
    d = ev.data
    p = d["profiles"]
    out = [
        '<section id="data"><h2>4. Data profiles and drift at training time</h2>',
        "<h3>Profiles of the training data</h3>",
    ]
    out.append(f'<p class="{"note" if p["entries"] else "warn"}">{_e(p["note"])}</p>')
    if p["entries"]:
        out.append(
            _table(
                (
                    "day",
                    "profile",
                    "columns",
                    "rows",
                    "bytes",
                    "profile table version",
                    "profiled",
                    "source content",
                ),
                [
                    (
                        _e(x["partition"]),
                        f"<code>{_e(x['profile'])}</code>",
                        _e(x["columns"]),
                        _e(x["rows"]),
                        _e(x["bytes"]),
                        _e(x["commit"] or x["table_version"]),
                        _e("before training" if x["before_training"] else "after training"),
                        _e((x.get("content_hash") or "")[:12]),
                    )
                    for x in p["entries"]
                ],
                (2, 3, 4),
            )
        )
    if p["entries"] and p["not_recorded"]:
        out.append(
            f'<p class="warn">No profile of the version trained on: {_e(", ".join(p["not_recorded"]))}</p>'
        )
    for key, head in (
        ("drift_training_window", "Drift of the training days, recorded before training"),
        ("drift_against_this_model", "Drift judged against this version's training window"),
    ):
        section = d[key]
        out.append(f"<h3>{_e(head)}</h3>")
        out.append(f'<p class="{"note" if section["entries"] else "warn"}">{_e(section["note"])}</p>')
        if section["entries"]:
            out.append(_drift_rows(section["entries"]))
    out.append("<h3>Quarantine of the validated partitions</h3>")
    if not d["quarantine"]:
        out.append('<p class="warn">not recorded: no validated partition on the chain</p>')
    for q in d["quarantine"]:
        out.append(
            f"<p><b>{_e(q['asset'])}</b>: {q['partitions']} partitions,"
            f" {q['quarantined_rows']} quarantined rows"
            + (f", {q['not_recorded']} partitions record no quarantine count" if q["not_recorded"] else "")
            + "</p>"
        )
        if q["with_quarantine"]:
            out.append(
                _table(
                    ("partition", "quarantined rows", "share", "failures by check"),
                    [
                        (
                            _e(w["partition"]),
                            _e(w["quarantined_rows"]),
                            _e(w["share"]),
                            _e(json.dumps(w["failures_by_check"])),
                        )
                        for w in q["with_quarantine"]
                    ],
                    (1, 2),
                )
            )
    out.append("</section>")
    return out


def _approvals_section(ev: Evidence) -> list[str]:
    a = ev.approvals
    out = ['<section id="approvals"><h2>5. Approvals and alias history</h2>']
    verified = (
        '<span class="ok">hash chain verified</span>'
        if a["verified"]
        else f'<span class="bad">does NOT verify: {_e(a["verify_error"])}</span>'
        if a["verified"] is False
        else '<span class="warn">empty: nothing to verify</span>'
    )
    out.append(
        f"<p>Audit log <code>{_e(a['audit_table'])}</code>: {verified};"
        f" {len(a['events'])} event(s) about v{_e(ev.model['version'])}.</p>"
    )
    if a["events"]:
        rows = []
        for e in a["events"]:
            moved = (
                f"{e['alias']}: {e['previous_version'] or 'none'} -> {e['version']}"
                if e["alias"]
                else f"v{e['version']}"
            )
            rows.append(
                (
                    _e(e["occurred_at"]),
                    _e(e["action"]) + (' <span class="ok">(approval)</span>' if e.get("approval") else ""),
                    _e(moved),
                    _e(e["actor"]),
                    _e(e["reason"]),
                    f"<details><summary>evidence</summary>{_pre(e['evidence'])}</details>",
                    f"<code>{_e(e['event_hash'][:16])}</code> "
                    + _yes(e["hash_ok"], "hash ok", "HASH MISMATCH"),
                )
            )
        out.append(
            _table(("time (UTC)", "action", "alias", "actor", "reason", "evidence", "event hash"), rows)
        )
    else:
        out.append('<p class="warn">not recorded: the audit log has no event about this version</p>')
    dep = a["deployment"]
    out.append("<h3>Deployment</h3>")
    if dep is None:
        out.append('<p class="note">no deployment record was read (see the header for a missing link)</p>')
    else:
        log = {
            True: '<span class="ok">hash chain verified</span>',
            None: '<span class="warn">empty</span>',
        }.get(dep["log_verified"], f'<span class="bad">does NOT verify: {_e(dep["log_error"])}</span>')
        out.append(
            f"<p>Desired state <code>{_e(dep['desired_path'])}</code>:"
            f" generation {_e(dep['desired_generation'])}"
            f" ({_e(dep['desired_mode'])}), requested by {_e(dep['desired_requested_by'])} at"
            f" {_e(dep['desired_requested_at'])}."
            f" Deployment log <code>{_e(dep['log_table'])}</code>: {log}.</p>"
        )
        if dep["events"]:
            out.append(
                _table(
                    ("time (UTC)", "action", "Bento", "mode", "share", "actor", "reason", "event hash"),
                    [
                        (
                            _e(e["occurred_at"]),
                            _e(e["action"]),
                            f"<code>{_e(e['bento_tag'])}</code>",
                            _e(e["mode"]),
                            _e(e["share"]),
                            _e(e["actor"]),
                            _e(e["reason"]),
                            f"<code>{_e(str(e['event_hash'])[:16])}</code>",
                        )
                        for e in dep["events"]
                    ],
                )
            )
    out.append("</section>")
    return out


def _reproduce_section(ev: Evidence) -> list[str]:
    r = ev.reproduce
    out = ['<section id="reproduce"><h2>6. How to reproduce</h2>']
    out.append(
        _table(
            ("", ""),
            [
                (
                    "trained by",
                    f"<code>{_e(r.get('delay_model'))}</code>"
                    f" (Dagster run <code>{_e(r.get('dagster_run_id'))}</code>)",
                ),
                ("code version", f"<code>{_e(r['code_version'])}</code> ({_e(r.get('code_version_from'))})"),
                ("git commit", f"<code>{_e(r['git_commit'])}</code>"),
                (
                    "MLflow run",
                    f"<code>{_e(r['mlflow_run_id'])}</code> (experiment {_e(r.get('mlflow_experiment_id'))})",
                ),
            ],
        )
    )
    out.append("<h3>Commands</h3>")
    for c in r["commands"]:
        out.append(f"<pre>{_e(c['command'])}</pre><p><b>{_e(c['status'])}</b>: {_e(c['note'])}</p>")
    for note in r["notes"]:
        out.append(f'<p class="note">{_e(note)}</p>')
    out.append(
        f"<h3>Pinned training inputs ({len(r['pins'])}, as the model's lineage/upstream recorded them)</h3>"
    )
    if r["pins"]:
        out.append(
            _table(
                (
                    "table[partition]",
                    "table version / commit",
                    "content hash",
                    "rows",
                    "materialization",
                    "Dagster data version",
                    "still the latest",
                ),
                [
                    (
                        _e(f"{p['recorded'].get('table')}[{p['recorded'].get('partition')}]"),
                        _e(p["recorded"].get("commit") or p["recorded"].get("table_version")),
                        f"<code>{_e(p['recorded'].get('content_hash'))}</code>",
                        _e(p["recorded"].get("row_count")),
                        f"<code>{_e(p['materialization'])}</code>",
                        f"<code>{_e(p['data_version'])}</code>",
                        _yes(p["still_latest"], "yes", "NO")
                        + (f" (now {_e(p['latest_now']['materialization'])})" if p.get("latest_now") else ""),
                    )
                    for p in r["pins"]
                ],
                (3,),
            )
        )
    else:
        out.append('<p class="bad">not recorded: the model recorded no training pins</p>')
    if r["holdout_pins"]:
        out.append(f"<h3>Evaluation holdout pins ({len(r['holdout_pins'])})</h3>")
        out.append(
            _table(
                ("table[partition]", "table version / commit", "content hash", "rows"),
                [
                    (
                        _e(f"{p.get('table')}[{p.get('partition')}]"),
                        _e(p.get("commit") or p.get("table_version")),
                        f"<code>{_e(p.get('content_hash'))}</code>",
                        _e(p.get("row_count")),
                    )
                    for p in r["holdout_pins"]
                ],
                (3,),
            )
        )
    out.append("<h3>MLflow params</h3>")
    out.append(
        _table(("param", "value"), [(_e(k), _e(v)) for k, v in r["params"].items()])
        if r["params"]
        else '<p class="warn">not recorded: no MLflow run</p>'
    )
    if r.get("training_config"):
        out.append(f"<h3>training/config</h3>{_pre(r['training_config'])}")
    out.append("</section>")
    return out
