"""``mlp deploy release`` and ``mlp deploy rollback``: every failure says why, a bad request launches no run.

The CLI runs in this process (typer's runner) on a bare project root in ``tmp_path``: its own sqlite
instance, MLflow store and desired state, nothing deployed. Nothing here needs a model or a Bento:
each case fails before the deployment would need one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from typer.testing import CliRunner

from ml_platform.cli import app
from ml_platform.instance import open_instance
from ml_platform.settings import PlatformSettings

#: What Dagster's wrapper of a user error says, and all the CLI used to print of it.
WRAPPER = "Error occurred while executing op"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in [n for n in os.environ if n.startswith(("MLP_", "DAGSTER_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLP_ROOT_DIR", str(tmp_path))
    monkeypatch.setenv("MLP_GIT_COMMIT", "test")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster"))  # the CLI exports it; restored after
    yield tmp_path


def _runs(root: Path) -> list[dg.DagsterRun]:
    return list(open_instance(PlatformSettings(root_dir=root)).get_runs())


def _said(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--strategy", "canary", "--share", "0"], "share must be within (0, 1]"),
        (["--strategy", "canary", "--share", "1.5"], "share must be within (0, 1]"),
        (["--strategy", "canary", "--share", "-1"], "share must be within (0, 1]"),
        (["--strategy", "canary", "--share", "nan"], "share must be within (0, 1]"),
        (["--strategy", "blue_green", "--share", "0.5"], "a share is for a canary, not blue_green"),
        (["--strategy", "sideways"], "'sideways' is not one of blue_green, canary, shadow"),
    ],
)
def test_a_bad_share_or_strategy_is_refused_before_any_run_is_launched(root, args, says):
    assert _runs(root) == []
    result = CliRunner().invoke(app, ["deploy", "release", *args])
    assert result.exit_code == 2, result.output  # a usage error, as for any bad option
    assert says in _said(result.output), result.output
    assert _runs(root) == [], "the refused release launched a run"


def test_a_share_without_a_strategy_follows_the_default_strategy(root, monkeypatch):
    monkeypatch.setenv("MLP_DEPLOY_STRATEGY", "shadow")
    result = CliRunner().invoke(app, ["deploy", "release", "--share", "0.5"])
    assert result.exit_code == 2 and "MLP_DEPLOY_STRATEGY is shadow" in _said(result.output), result.output
    assert _runs(root) == []


def test_an_error_that_is_not_a_failure_prints_its_innermost_cause(root, monkeypatch):
    """A broken desired-state store (here: one whose volume went away) fails the step with an error
    that is not a :class:`dagster.Failure`, chained with ``from``: the message and its root cause are
    printed, not Dagster's empty "Error occurred while executing op"."""
    from ml_platform.lib.deploy.desired import DesiredStateStore

    def read(self: DesiredStateStore) -> None:
        try:
            raise ConnectionResetError(f"the volume of {self.path.parent} went away")
        except ConnectionResetError as exc:
            raise RuntimeError(f"cannot read {self.path}") from exc

    monkeypatch.setattr(DesiredStateStore, "read", read)
    result = CliRunner().invoke(app, ["deploy", "rollback"])
    assert result.exit_code == 1, result.output
    said = _said(result.output)
    [run] = _runs(root)
    assert f"deployment failed (run {run.run_id}): RuntimeError: cannot read" in said, said
    assert f"(innermost cause: ConnectionResetError: the volume of {root}" in said, said
    assert WRAPPER not in said and "Traceback" not in said
    assert run.status == dg.DagsterRunStatus.FAILURE


def test_an_unusable_tracking_store_is_named(root, monkeypatch):
    """A real error from MLflow (its sqlite file cannot be created): the path is in the message."""
    monkeypatch.setenv("MLP_MLFLOW_TRACKING_URI", "sqlite:////proc/no-such-dir/mlflow.db")
    result = CliRunner().invoke(app, ["deploy", "release"])
    assert result.exit_code == 1, result.output
    said = _said(result.output)
    assert "deployment failed (run " in said and "/proc/no-such-dir" in said, said
    assert WRAPPER not in said


def test_an_instance_that_cannot_be_opened_is_a_message_not_a_traceback(root):
    (root / "dagster.yaml").write_text("storage:\n  sqlite:\n    base_dirr: x\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["deploy", "rollback"])
    assert result.exit_code == 1, result.output
    said = _said(result.output)
    assert f"cannot open the Dagster instance in {root / '.dagster'}: DagsterInvalidConfigError" in said
    assert 'unexpected config entry "base_dirr"' in said, said
    assert isinstance(result.exception, SystemExit)
