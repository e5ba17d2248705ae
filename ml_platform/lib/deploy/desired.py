"""The deployment's desired state: what should serve, and how traffic is split.

The ``deployment`` asset (and ``mlp deploy``) decides; the supervisor (``mlp deploy serve``,
:mod:`ml_platform.lib.deploy.supervisor`) applies. They share one small JSON file,
``<storage>/serving/deployment/desired.json``, written whole (temporary file and rename, under an
exclusive lock) with a generation number that grows by one per change. The supervisor writes it too,
for the decisions it takes by itself: a rollback (the challenger leaves, and its Bento is remembered
in ``rolled_back`` so that no later deploy re-canaries it without ``force``) and an automatic
promotion of a healthy canary. So the file is always what is meant to run, whoever decided last,
and each change is also an event of the :class:`~ml_platform.lib.deploy.events.DeploymentLog`.

:func:`plan` is the one place that turns "deploy this release with this strategy" into the next state:

* nothing deployed yet: the release becomes the champion (whatever the strategy);
* ``blue_green``: the release replaces the champion (promoting the challenger when it is one);
* ``canary``: the release becomes the challenger and answers ``share`` of the requests;
* ``shadow``: the release becomes the challenger and scores a copy of every request;
* the champion itself: the challenger, if any, is stopped; otherwise nothing changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from ml_platform.lib.deploy.rollback import CanaryThresholds
from ml_platform.lib.deploy.router import Mode, RoutingPolicy
from ml_platform.lib.files import write_atomic

Strategy = Literal["blue_green", "canary", "shadow"]
STRATEGIES: Final = ("blue_green", "canary", "shadow")
FORMAT: Final = 1


class DeploymentRefused(ValueError):
    """A requested change that the desired state does not allow (e.g. re-canarying a rolled-back Bento)."""


class DesiredStateError(RuntimeError):
    """The desired-state file cannot be read or written."""


@dataclass(frozen=True)
class Release:
    """A Bento that can serve, with what it serves and where it came from."""

    bento_tag: str
    model_name: str
    model_version: str
    #: The ``delay_bento`` partition and Dagster run that built it (the lineage link), when known.
    bento_partition: str | None = None
    bento_run_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model_name} v{self.model_version}"

    def same_bento(self, other: Release | None) -> bool:
        return other is not None and other.bento_tag == self.bento_tag


@dataclass(frozen=True)
class DesiredState:
    """One generation of what should run (see the module doc)."""

    generation: int
    champion: Release
    challenger: Release | None
    mode: Mode
    share: float
    thresholds: CanaryThresholds
    #: Promote a canary by itself after this many seconds without a breach (None: never by itself).
    promote_after_s: float | None
    requested_at: datetime
    #: Who decided (``dagster:run <id>``, ``cli:<user>``, ``policy:canary-guard``, ...) and why.
    requested_by: str
    reason: str
    #: Bento tags that were rolled back; :func:`plan` refuses to send traffic to them again without force.
    rolled_back: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        self.policy()  # validates mode and share
        if (self.challenger is None) != (self.mode == "single"):
            raise ValueError(
                f"generation {self.generation}: mode {self.mode!r} with"
                f" {'a' if self.challenger else 'no'} challenger"
            )
        if self.challenger is not None and self.challenger.same_bento(self.champion):
            raise ValueError(f"{self.champion.bento_tag} cannot be both champion and challenger")

    def policy(self) -> RoutingPolicy:
        """The router's policy for this state (canary requests stick to their ``X-Request-ID``)."""
        if self.mode == "canary":
            return RoutingPolicy.canary(self.share, sticky_header="X-Request-ID")
        return RoutingPolicy(self.mode)

    def describe(self) -> str:
        text = f"champion {self.champion.label} ({self.champion.bento_tag})"
        if self.challenger is not None:
            text += f", {self.policy().describe()} of {self.challenger.label} ({self.challenger.bento_tag})"
        return text

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = FORMAT
        data["requested_at"] = self.requested_at.astimezone(UTC).isoformat()
        data["thresholds"] = asdict(self.thresholds)
        data["rolled_back"] = list(self.rolled_back)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DesiredState:
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown desired-state format {data.get('format')!r} (expected {FORMAT})")
        challenger = data.get("challenger")
        return cls(
            generation=int(data["generation"]),
            champion=Release(**data["champion"]),
            challenger=None if challenger is None else Release(**challenger),
            mode=data["mode"],
            share=float(data["share"]),
            thresholds=CanaryThresholds(**data["thresholds"]),
            promote_after_s=None if data.get("promote_after_s") is None else float(data["promote_after_s"]),
            requested_at=datetime.fromisoformat(data["requested_at"]),
            requested_by=str(data["requested_by"]),
            reason=str(data["reason"]),
            rolled_back=tuple(data.get("rolled_back") or ()),
        )


@dataclass(frozen=True)
class Request:
    """Who asks for a change, and how a canary is judged and promoted."""

    requested_by: str
    reason: str
    thresholds: CanaryThresholds = field(default_factory=CanaryThresholds)
    promote_after_s: float | None = None


def plan(
    current: DesiredState | None,
    release: Release,
    strategy: Strategy,
    request: Request,
    *,
    share: float = 0.1,
    force: bool = False,
) -> tuple[DesiredState | None, str]:
    """The next desired state for deploying ``release`` by ``strategy``, and what it does in words.

    Returns ``(None, why)`` when ``current`` already is that state.

    Raises:
        ValueError: an unknown strategy, or a share outside (0, 1] for a canary.
        DeploymentRefused: ``release`` was rolled back and ``force`` is False.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "canary" and not 0.0 < share <= 1.0:
        raise ValueError(f"a canary share must be within (0, 1], got {share}")
    generation = 1 if current is None else current.generation + 1
    rolled_back = () if current is None else current.rolled_back
    if release.bento_tag in rolled_back:
        if not force:
            raise DeploymentRefused(
                f"{release.label} ({release.bento_tag}) was rolled back; deploy it again only with force"
            )
        rolled_back = tuple(t for t in rolled_back if t != release.bento_tag)

    def state(champion: Release, challenger: Release | None, mode: Mode, share_: float) -> DesiredState:
        return DesiredState(
            generation=generation,
            champion=champion,
            challenger=challenger,
            mode=mode,
            share=share_,
            thresholds=request.thresholds,
            promote_after_s=request.promote_after_s if mode == "canary" else None,
            requested_at=datetime.now(UTC),
            requested_by=request.requested_by,
            reason=request.reason,
            rolled_back=rolled_back,
        )

    if current is None:
        return state(release, None, "single", 0.0), f"first deploy: {release.label} serves everything"
    if release.same_bento(current.champion):
        if current.challenger is None:
            return None, f"{release.label} already serves everything"
        return (
            state(release, None, "single", 0.0),
            f"{release.label} stays champion; the {current.mode} of {current.challenger.label} stops",
        )
    if strategy == "blue_green":
        if release.same_bento(current.challenger):
            note = f"blue-green: the challenger {release.label} is promoted over {current.champion.label}"
        else:
            note = f"blue-green: {release.label} replaces {current.champion.label}"
        return state(release, None, "single", 0.0), note
    mode: Mode = "canary" if strategy == "canary" else "shadow"
    new_share = share if mode == "canary" else 0.0
    if (
        release.same_bento(current.challenger)
        and current.mode == mode
        and current.share == new_share
        and current.thresholds == request.thresholds
        and current.promote_after_s == (request.promote_after_s if mode == "canary" else None)
    ):
        return None, f"{release.label} already is the {current.policy().describe()} challenger"
    what = f"canary: {release.label} answers {share:.0%}" if mode == "canary" else f"shadow: {release.label}"
    return state(current.champion, release, mode, new_share), f"{what} beside {current.champion.label}"


def after_rollback(current: DesiredState, bento_tag: str, reason: str, actor: str) -> DesiredState | None:
    """The state after the guard sent the challenger ``bento_tag`` back (None: it is no longer there)."""
    if current.challenger is None or current.challenger.bento_tag != bento_tag:
        return None
    return replace(
        current,
        generation=current.generation + 1,
        challenger=None,
        mode="single",
        share=0.0,
        promote_after_s=None,
        requested_at=datetime.now(UTC),
        requested_by=actor,
        reason=f"rollback of {current.challenger.label}: {reason}",
        rolled_back=(*current.rolled_back, bento_tag),
    )


def after_promotion(current: DesiredState, bento_tag: str, reason: str, actor: str) -> DesiredState | None:
    """The state after the canary ``bento_tag`` was promoted (None: it is no longer the challenger)."""
    if current.challenger is None or current.challenger.bento_tag != bento_tag or current.mode != "canary":
        return None
    return replace(
        current,
        generation=current.generation + 1,
        champion=current.challenger,
        challenger=None,
        mode="single",
        share=0.0,
        promote_after_s=None,
        requested_at=datetime.now(UTC),
        requested_by=actor,
        reason=reason,
    )


class DesiredStateStore:
    """The desired-state file (see the module doc); changes go through :meth:`update`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def __repr__(self) -> str:
        return f"DesiredStateStore({str(self.path)!r})"

    def read(self) -> DesiredState | None:
        """The current state (None before the first deploy).

        Raises:
            DesiredStateError: the file exists but is not a desired state.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DesiredStateError(f"cannot read {self.path}: {exc}") from exc
        try:
            return DesiredState.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise DesiredStateError(f"{self.path} is not a desired deployment state: {exc}") from exc

    def update(
        self, change: Callable[[DesiredState | None], DesiredState | None]
    ) -> tuple[DesiredState | None, bool]:
        """Apply ``change`` to the current state under the lock; return (the state now, changed?).

        ``change`` returns the next state (its generation one above the current one) or None for no
        change. Two writers never interleave: the second reads what the first wrote.

        Raises:
            DesiredStateError: the file cannot be read or written, or the change skips a generation.
        """
        with self._locked():
            current = self.read()
            new = change(current)
            if new is None:
                return current, False
            expected = 1 if current is None else current.generation + 1
            if new.generation != expected:
                raise DesiredStateError(
                    f"{self.path}: a change to generation {new.generation} of a state at"
                    f" generation {expected - 1}"
                )
            self._write(new)
            return new, True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self._lock_path.open("a")
        except OSError as exc:
            raise DesiredStateError(f"cannot lock {self._lock_path}: {exc}") from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, state: DesiredState) -> None:
        text = json.dumps(state.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        try:
            write_atomic(self.path, text)
        except OSError as exc:
            raise DesiredStateError(f"cannot write {self.path}: {exc}") from exc
