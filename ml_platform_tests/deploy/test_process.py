"""``ServedProcess``: a real ``bentoml serve`` started, probed and stopped; the failure messages."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from ml_platform.lib.deploy.process import SOURCE_TARGET, ServedProcess, ServedProcessError
from ml_platform_tests.deploy.conftest import ServeFactory, Versions


class _Script(ServedProcess):
    """A stand-in server: a Python script instead of ``bentoml serve`` (no port is ever opened)."""

    def __init__(self, code: str, **kwargs: object) -> None:
        super().__init__("script", **kwargs)  # type: ignore[arg-type]
        self.code = code

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.code]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_server_that_exits_fails_with_its_output(tmp_path: Path) -> None:
    process = _Script(
        "print('boom: no model here', flush=True); raise SystemExit(3)", log_path=tmp_path / "x.log"
    )
    with pytest.raises(
        ServedProcessError, match=r"exited with 3 before it was ready(?s:.*)boom: no model here"
    ):
        process.start()
    assert not process.alive() and not process.healthy()


def test_a_server_never_ready_is_stopped_with_its_group(tmp_path: Path) -> None:
    # the leader forks a child into its group, then never listens
    code = (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    open(r'%s', 'w').write(str(os.getpid()))\n"
        "    time.sleep(600)\n"
        "print('waiting forever', flush=True)\n"
        "time.sleep(600)\n"
    ) % (tmp_path / "child.pid")
    process = _Script(code, log_path=tmp_path / "x.log", ready_timeout_s=1.5, grace_s=1.0)
    started = time.monotonic()
    with pytest.raises(ServedProcessError, match=r"not ready after 2 s(?s:.*)waiting forever"):
        process.start()
    assert time.monotonic() - started < 10
    assert not process.alive()
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child), "the forked worker outlived stop()"


def test_not_started() -> None:
    process = ServedProcess(SOURCE_TARGET)
    assert process.stop() is None and not process.healthy()
    with pytest.raises(ServedProcessError, match="no port yet"):
        _ = process.port


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.live
def test_a_live_server_starts_answers_and_stops(
    serve: ServeFactory, versions: Versions, flight: dict[str, Any]
) -> None:
    process = serve("live", versions.second.tag)
    assert process.healthy() and process.alive()
    assert process.url == f"http://127.0.0.1:{process.port}"
    assert process.started_in_s is not None and process.started_in_s < 120
    assert "--arg" in process.command() and f"model_tag={versions.second.tag}" in process.command()
    assert httpx.get(f"{process.url}/livez", timeout=5).status_code == 200
    answer = httpx.post(f"{process.url}/predict", json=flight, timeout=10)
    assert answer.status_code == 200, answer.text
    # the model chosen by --arg: version 2
    assert answer.headers["X-Model-Version"] == versions.second.model_version
    with pytest.raises(ServedProcessError, match="already started"):
        process.start()
    pid = process.pid
    assert pid is not None
    workers = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    assert workers, "bentoml serve runs its service in worker processes"
    code = process.stop()
    assert code is not None and not process.alive() and not process.healthy()
    assert _gone(pid) and all(_gone(w) for w in workers)  # the workers (own sessions) too
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{process.url}/livez", timeout=2)
    assert process.stop() == code  # idempotent


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.live
def test_kill_ends_the_workers_too(serve: ServeFactory, versions: Versions) -> None:
    process = serve("doomed", versions.first.tag)
    assert process.pid is not None
    workers = [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
    process.kill()
    assert not process.alive() and _gone(process.pid) and all(_gone(w) for w in workers)
