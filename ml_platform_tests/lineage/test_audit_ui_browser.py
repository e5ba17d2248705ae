"""The auditors' read-only UI in a real browser: the model's lineage graph and its metadata render.

``mlp audit-ui`` serves the lineage test graph's instance read-only; headless Chromium (Debian's
``chromium``, which ``.ci/run`` installs) opens the ``delay_model`` asset, driven over the Chrome
DevTools Protocol (``websockets``, already in the resolved set): its Lineage tab must draw the model
between its feature and evaluation assets, and its Events tab must show the materialization's
recorded metadata (MLflow run, model version, lineage keys). Screenshots of both go to
``test-artifacts/`` (kept by CI as artifacts). Without a Chromium binary the test is skipped and
says how to install one; it never passes without a browser.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml_platform_tests.lineage.conftest import ENV
from ml_platform_tests.serving.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.live]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)


class Browser:
    """One headless Chromium page, driven over the DevTools protocol."""

    def __init__(self, binary: str) -> None:
        from websockets.sync.client import connect

        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="mlp-chromium-")
        self.process = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1600,1000",
                f"--remote-debugging-port={self.port}",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json", timeout=2) as r:
                    pages = [p for p in json.loads(r.read()) if p.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "chromium did not open its DevTools port in 30 s"
            time.sleep(0.2)
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 2**20)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == message_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for_text(self, *texts: str, timeout_s: float = 60) -> str:
        """The page's visible text once it holds every one of ``texts``."""
        deadline = time.monotonic() + timeout_s
        body = ""
        while time.monotonic() < deadline:
            body = self.evaluate("document.body ? document.body.innerText : ''") or ""
            if all(t in body for t in texts):
                return str(body)
            time.sleep(0.5)
        missing = [t for t in texts if t not in body]
        raise AssertionError(f"not rendered within {timeout_s} s: {missing}; the page shows:\n{body[:3000]}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.ws.close()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


#: The model, an upstream and a downstream asset of its lineage view.
LINEAGE = ["flight_features", "delay_model", "model_evaluation"]
#: Per asset name: the boxes of the graph's elements (inside its SVG) whose own text is that name.
GRAPH_NODES_JS = """(names => Object.fromEntries(names.map(name => [name,
  [...document.querySelectorAll('svg *')].filter(el => el.closest('svg') && [...el.childNodes].some(
    n => n.nodeType === Node.TEXT_NODE && n.textContent.trim() === name)).map(el => {
      const r = el.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height};
    }).filter(r => r.w > 0 && r.h > 0)])))(%s)"""


def _newest_model(world: Any) -> Any:
    """The newest ``delay_model`` materialization (what the events tab opens on)."""
    import dagster as dg

    records = world.instance.fetch_materializations(
        dg.AssetKey("delay_model"), limit=1, ascending=False
    ).records
    return records[0].asset_materialization


@pytest.fixture
def audit_ui(lineage_world) -> Iterator[str]:
    """``mlp audit-ui`` on the lineage graph's instance; its URL."""
    w = lineage_world
    shutil.copy(ROOT / "workspace.yaml", w.root / "workspace.yaml")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLP_", "DAGSTER_"))},
        **ENV,  # the graph's settings, as the CLI tests pass them
        "MLP_ROOT_DIR": str(w.root),
        "DAGSTER_HOME": str(w.settings.dagster_home),
    }
    log = (w.root / "audit-ui.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlp")), "audit-ui", "--port", str(port)],
        cwd=w.root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (
                    w.root / "audit-ui.log"
                ).read_text()[-4000:]
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary: `apt-get install chromium` (.ci/run installs it)"
)
def test_the_read_only_ui_renders_the_models_lineage_graph_and_metadata(audit_ui, lineage_world) -> None:
    assert CHROMIUM is not None
    browser = Browser(CHROMIUM)
    try:
        browser.call("Page.enable")
        browser.call("Runtime.enable")
        browser.goto(audit_ui)
        browser.wait_for_text("Overview")
        # Dagster's one-time "join the community" dialog would cover the graph in the screenshot
        browser.evaluate("localStorage.setItem('communityNux', '1')")

        browser.goto(f"{audit_ui}/assets/delay_model?view=lineage")
        browser.wait_for_text("delay_model", "flight_features", "model_evaluation", "Lineage")
        time.sleep(1.0)  # the graph's layout settles after its nodes appear
        browser.screenshot(ARTIFACTS / "audit-ui-delay_model-lineage.png")
        # the text was there already; what the wait cannot tell is that the graph DRAWS the model
        # between them: a node per asset, upstream left of it and downstream right of it
        nodes = browser.evaluate(GRAPH_NODES_JS % json.dumps(LINEAGE))
        placed = {name: boxes for name, boxes in nodes.items() if boxes}
        assert set(placed) == set(LINEAGE), f"not drawn as graph nodes: {set(LINEAGE) - set(placed)}"
        x = {name: min(box["x"] for box in boxes) for name, boxes in placed.items()}
        assert x["flight_features"] < x["delay_model"] < x["model_evaluation"], nodes

        # the events tab: not only the keys (the wait saw them) but the values recorded for the
        # newest materialization, which no other asset or run shares
        newest = _newest_model(lineage_world)
        browser.goto(f"{audit_ui}/assets/delay_model?view=events")
        events = browser.wait_for_text("mlflow/run_id", "mlflow/model_version", "lineage/upstream")
        browser.screenshot(ARTIFACTS / "audit-ui-delay_model-events.png")
        run_id = str(newest.metadata["mlflow/run_id"].value)
        assert len(run_id) == 32 and run_id in events, events[:3000]
        assert newest.partition is not None and newest.partition in events
    finally:
        browser.close()
    for name in ("audit-ui-delay_model-lineage.png", "audit-ui-delay_model-events.png"):
        png = (ARTIFACTS / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000, name
