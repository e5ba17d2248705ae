"""A ``bentoml serve`` process on loopback, managed: start, wait ready, health, port, stop.

:class:`ServedProcess` runs ``bentoml serve <target> --host 127.0.0.1 --port <port>`` where the
target is a built Bento (``delay_service:abc123``) or the service from source
(``ml_platform.serving.service:DelayService``, with ``--arg model_tag=...`` or
``MLP_SERVING_MODEL_TAG`` in its environment). The process gets its own process group (BentoML
forks workers: :meth:`ServedProcess.stop` signals the whole group: SIGTERM, then SIGKILL after a
grace period) and its output goes to a log file whose tail every error quotes.

Each process should have its own ``BENTOML_HOME``: BentoML wipes the Prometheus multiprocess folder
under it when it starts, so two servers sharing one corrupt each other's metrics.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final

import httpx
import psutil

#: The service from source; serve it with ``args={"model_tag": ...}`` or ``MLP_SERVING_MODEL_TAG``.
SOURCE_TARGET: Final = "ml_platform.serving.service:DelayService"
LOOPBACK: Final = "127.0.0.1"


class ServedProcessError(RuntimeError):
    """The server did not start, exited, or did not become ready in time (the message has its output)."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on now on ``host`` (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def bentoml_executable() -> str:
    """The ``bentoml`` script next to this interpreter (the venv's), else ``bentoml`` on PATH."""
    beside = Path(sys.executable).with_name("bentoml")
    return str(beside) if beside.exists() else "bentoml"


class ServedProcess:
    """One ``bentoml serve`` of ``target`` on a loopback port.

    Args:
        target: A Bento tag or ``module:Class`` (see :data:`SOURCE_TARGET`).
        env: The whole environment of the process (give ``BENTOML_HOME``, ``MLP_*``); default:
            this process's environment.
        args: ``--arg name=value`` template arguments (e.g. ``{"model_tag": "delay_model:v3-..."}``).
        name: For messages and the log file name.
        port: Default: a free port, picked at :meth:`start`.
        cwd: Working directory (where ``module:Class`` targets are importable from).
        log_path: Where its output goes; default: a file in a new temporary folder.
        ready_timeout_s: How long :meth:`start` waits for ``/readyz``.
        grace_s: Seconds between SIGTERM and SIGKILL in :meth:`stop`.
        extra_options: More ``bentoml serve`` options (``["--timeout", "30"]``).
    """

    def __init__(
        self,
        target: str,
        *,
        env: Mapping[str, str] | None = None,
        args: Mapping[str, str] | None = None,
        name: str = "served",
        port: int | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        ready_timeout_s: float = 120.0,
        grace_s: float = 20.0,
        extra_options: Sequence[str] = (),
    ) -> None:
        self.target = target
        self.env = dict(os.environ if env is None else env)
        self.args = dict(args or {})
        self.name = name
        self._port = port
        self.cwd = cwd
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.grace_s = grace_s
        self.extra_options = list(extra_options)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in_s: float | None = None
        self._log: IO[bytes] | None = None
        self._workers: list[psutil.Process] = []

    def __repr__(self) -> str:
        state = "not started" if self.process is None else f"pid {self.process.pid}"
        return f"ServedProcess({self.name!r}, {self.target!r}, port={self._port}, {state})"

    # ------------------------------------------------------------------------------- properties

    @property
    def port(self) -> int:
        """The port it listens on (known once started, or when given)."""
        if self._port is None:
            raise ServedProcessError(f"{self.name}: not started, no port yet")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def command(self) -> list[str]:
        """The command line it runs."""
        command = [bentoml_executable(), "serve", self.target, "--host", LOOPBACK, "--port", str(self.port)]
        for key, value in self.args.items():
            command += ["--arg", f"{key}={value}"]
        return command + self.extra_options

    # -------------------------------------------------------------------------------- lifecycle

    def start(self, *, wait: bool = True) -> ServedProcess:
        """Start the server (and wait until ``/readyz`` answers 200 unless ``wait`` is False).

        Raises:
            ServedProcessError: already started, cannot be started, exited, or not ready within
                ``ready_timeout_s`` (then it is stopped); the message holds the end of its output.
        """
        if self.process is not None:
            raise ServedProcessError(f"{self.name}: already started (pid {self.process.pid})")
        if self._port is None:
            self._port = free_port()
        if self.log_path is None:
            self.log_path = Path(tempfile.mkdtemp(prefix=f"mlp-serve-{self.name}-")) / "server.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                env=self.env,
                cwd=self.cwd,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends the workers too
            )
        except OSError as exc:
            self._log.close()
            raise ServedProcessError(f"{self.name}: cannot run {self.command()}: {exc}") from exc
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float | None = None) -> float:
        """Wait until ``/readyz`` answers 200; return the seconds since the start.

        Raises:
            ServedProcessError: it exited, or was not ready in time (then it is stopped).
        """
        process = self._require_process()
        timeout = self.ready_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() - started < timeout:
                if process.poll() is not None:
                    self._close_log()
                    raise ServedProcessError(
                        f"{self.name}: `{' '.join(self.command())}` exited with {process.returncode}"
                        f" before it was ready; its output ends with:\n{self.log_tail()}"
                    )
                try:
                    if http.get(f"{self.url}/readyz").status_code == 200:
                        self.started_in_s = time.monotonic() - started
                        self._workers = self._tree()
                        return self.started_in_s
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise ServedProcessError(
            f"{self.name}: not ready after {timeout:.0f} s (GET {self.url}/readyz); its output ends"
            f" with:\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        """The process is running."""
        return self.process is not None and self.process.poll() is None

    def healthy(self, timeout_s: float = 2.0) -> bool:
        """Running, and ``/readyz`` answers 200 within ``timeout_s``."""
        if not self.alive():
            return False
        try:
            return httpx.get(f"{self.url}/readyz", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, grace_s: float | None = None) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; return the exit code.

        BentoML's workers run in sessions of their own (circus starts them with ``setsid``), out of
        the group's reach: they get the leader's SIGTERM through BentoML, and those still running
        after ``grace_s`` (or after a leader that died) are killed one by one. Safe to call more
        than once, and before :meth:`start`.
        """
        process = self.process
        if process is None:
            return None
        grace = self.grace_s if grace_s is None else grace_s
        tree = self._tree()
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            except ProcessLookupError:
                process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # members of the group left behind
        _kill_all(tree, wait_s=grace if process.returncode == 0 else 0.0)
        self._close_log()
        return process.returncode

    def kill(self) -> int | None:
        """SIGKILL the server and all its workers at once (a crash); return the exit code."""
        process = self.process
        if process is None:
            return None
        tree = self._tree()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        _kill_all(tree, wait_s=0.0)
        process.wait(timeout=10)
        self._close_log()
        return process.returncode

    def _tree(self) -> list[psutil.Process]:
        """The server's descendants now, and those seen when it became ready."""
        found = {p.pid: p for p in self._workers}
        if self.process is not None:
            with contextlib.suppress(psutil.Error):
                found.update({p.pid: p for p in psutil.Process(self.process.pid).children(recursive=True)})
        return list(found.values())

    def log_tail(self, chars: int = 6000) -> str:
        """The end of its output (empty before the start)."""
        if self._log is not None and not self._log.closed:
            self._log.flush()
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> ServedProcess:
        if self.process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------- helpers

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise ServedProcessError(f"{self.name}: not started")
        return self.process

    def _close_log(self) -> None:
        if self._log is not None and not self._log.closed:
            self._log.close()


def kill_tree(pid: int) -> None:
    """SIGKILL process ``pid`` and every process under it (BentoML's workers run in their own sessions)."""
    try:
        root = psutil.Process(pid)
        tree = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    _kill_all(tree, wait_s=0.0)


def _kill_all(processes: list[psutil.Process], wait_s: float) -> None:
    """Wait up to ``wait_s`` for ``processes`` to end, then SIGKILL those still running."""
    if not processes:
        return
    _, alive = psutil.wait_procs(processes, timeout=wait_s) if wait_s > 0 else ([], processes)
    for survivor in alive:
        with contextlib.suppress(psutil.Error):
            survivor.kill()  # psutil checks the pid still names the same process (its create time)
    psutil.wait_procs(alive, timeout=5)
