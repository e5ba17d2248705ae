"""When to ask for a retrain: triggers, guardrails and the sensor's state, as plain data.

The retrain sensor (``ml_platform.defs.monitoring.sensors``) gathers :class:`Trigger` s each tick
(drift at error severity, a stale champion, live degradation), works out the :class:`Target`
(the newest model partition that can be trained and gated) and calls :func:`decide`, which applies
the guardrails in order:

0. the target's records cannot be judged (a training-window record that is broken or missing, a
   model materialization without its lineage): **block**, naming the asset, partition and
   metadata key. A retrain would fail on the same record, or train from what nobody can vouch
   for; event triggers wait in the state, as for a deferral, until the record is repaired.
1. no target, or the target is already trained from the same data by the same code: **defer**.
   A retrain would reproduce the same model; event triggers (drift, degradation) wait in the
   state until a newer partition becomes trainable.
2. a request less than ``cooldown`` ago: **suppress** (the triggers are dropped; a drift that
   persists is reported again the next day).
3. ``max_per_day`` requests already today: **suppress**.
4. otherwise **request**, with a run key made of the partition and the evidence, so the same
   evidence can never launch two runs.

Every decision carries its triggers (features, scores, thresholds; ages and limits), so the run
it launches and the alert it sends say why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

Cause = Literal["drift", "degradation", "freshness"]
Action = Literal["request", "suppress", "defer", "block"]
#: Causes in order of precedence: the first one names the run key.
CAUSES: Final[tuple[Cause, ...]] = ("drift", "degradation", "freshness")
#: Requests kept in the state (for the cooldown and the daily cap).
HISTORY_DAYS: Final = 7
#: Deferred event triggers kept at most.
MAX_PENDING: Final = 20


@dataclass(frozen=True)
class Trigger:
    """One reason to retrain."""

    cause: Cause
    #: The data day the evidence is about (a drift report's partition, the latest data day).
    day: str
    #: One line for timelines and alerts: ``"temp mean_shift 6.73 >= 5 (error)"``.
    summary: str
    #: Machine-readable evidence: features with scores and thresholds, or ages and limits.
    detail: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"cause": self.cause, "day": self.day, "summary": self.summary, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trigger:
        """Inverse of :meth:`to_dict`."""
        return cls(data["cause"], data["day"], data["summary"], dict(data.get("detail") or {}))


@dataclass(frozen=True)
class Target:
    """The model partition a retrain would materialize."""

    partition: str | None
    #: True when that partition is already trained from the same feature versions by the same code.
    up_to_date: bool
    #: Why there is no target, or why it is up to date (shown when deferring).
    reason: str = ""
    #: What is broken when the target's records cannot be judged (asset, partition, metadata key):
    #: a retrain is blocked, not requested.
    broken: str = ""


@dataclass(frozen=True)
class RetrainRequest:
    """A request made (kept for the cooldown and the daily cap)."""

    at: datetime
    partition: str
    run_key: str
    causes: tuple[str, ...]


@dataclass(frozen=True)
class RetrainPolicy:
    """The guardrails."""

    cooldown: timedelta
    max_per_day: int

    def __post_init__(self) -> None:
        if self.max_per_day < 1:
            raise ValueError(f"max_per_day must be at least 1, got {self.max_per_day}")


@dataclass(frozen=True)
class RetrainDecision:
    """What one tick decided, and why."""

    action: Action
    reason: str
    triggers: tuple[Trigger, ...]
    partition: str | None = None
    run_key: str | None = None

    @property
    def causes(self) -> tuple[str, ...]:
        """The distinct causes, in precedence order."""
        present = {t.cause for t in self.triggers}
        return tuple(c for c in CAUSES if c in present)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (run tags, events table, alerts)."""
        return {
            "action": self.action,
            "reason": self.reason,
            "partition": self.partition,
            "run_key": self.run_key,
            "causes": list(self.causes),
            "triggers": [t.to_dict() for t in self.triggers],
        }


def run_key(partition: str, triggers: Sequence[Trigger]) -> str:
    """``retrain:<partition>:<cause>@<day>`` of the leading trigger: one run per piece of evidence."""
    lead = min(triggers, key=lambda t: (CAUSES.index(t.cause), t.day))
    return f"retrain:{partition}:{lead.cause}@{lead.day}"


def decide(
    triggers: Sequence[Trigger],
    target: Target,
    history: Sequence[RetrainRequest],
    now: datetime,
    policy: RetrainPolicy,
) -> RetrainDecision | None:
    """Apply the guardrails (module docstring) to this tick's triggers; None without triggers."""
    if not triggers:
        return None
    found = tuple(sorted(triggers, key=lambda t: (CAUSES.index(t.cause), t.day)))
    if target.broken:
        return RetrainDecision("block", f"retrain blocked: {target.broken}", found, target.partition)
    if target.partition is None or target.up_to_date:
        return RetrainDecision(
            "defer", target.reason or "no model partition to train", found, target.partition
        )
    recent = [r for r in history if now - r.at < policy.cooldown]
    if recent:
        last = max(recent, key=lambda r: r.at)
        at = last.at.astimezone(UTC)
        return RetrainDecision(
            "suppress",
            f"cooldown: {last.partition} was requested at {at:%Y-%m-%d %H:%M} UTC"
            f" ({', '.join(last.causes)}); next request allowed from"
            f" {at + policy.cooldown:%Y-%m-%d %H:%M} UTC",
            found,
            target.partition,
        )
    today = [r for r in history if r.at.astimezone(UTC).date() == now.astimezone(UTC).date()]
    if len(today) >= policy.max_per_day:
        return RetrainDecision(
            "suppress",
            f"daily cap: {len(today)} retrain request(s) today, at most {policy.max_per_day}",
            found,
            target.partition,
        )
    key = run_key(target.partition, found)
    return RetrainDecision("request", explain(found), found, target.partition, key)


def explain(triggers: Sequence[Trigger]) -> str:
    """One clause per cause: its days and its latest evidence (``"drift on 2013-04-10: temp ..."``)."""
    clauses = []
    for cause in CAUSES:
        of_cause = sorted((t for t in triggers if t.cause == cause), key=lambda t: t.day)
        if not of_cause:
            continue
        first, last = of_cause[0], of_cause[-1]
        days = first.day if first.day == last.day else f"{first.day}..{last.day} ({len(of_cause)} reports)"
        clauses.append(f"{cause} on {days}: {last.summary}")
    return "; ".join(clauses)


@dataclass
class RetrainState:
    """The sensor's cursor: where it stopped reading, recent requests, deferred triggers."""

    #: Storage id of the last drift report read.
    after_storage_id: int = 0
    #: Storage id of the last live performance report read.
    after_live_storage_id: int = 0
    history: list[RetrainRequest] = field(default_factory=list)
    pending: list[Trigger] = field(default_factory=list)
    #: The last deferral or suppression reported, so a standing condition (a stale champion with
    #: no newer week to train) is reported once, not every tick.
    last_note: str = ""
    #: Requests made since this state began, by cause (the Prometheus counter).
    requested: dict[str, int] = field(default_factory=dict)

    def is_news(self, decision: RetrainDecision, new_evidence: bool) -> bool:
        """Whether ``decision`` should be recorded and alerted (requests and new evidence always are)."""
        return decision.action == "request" or new_evidence or decision.reason != self.last_note

    def record(self, decision: RetrainDecision, now: datetime) -> None:
        """Update the state with a tick's decision."""
        self.last_note = "" if decision.action == "request" else decision.reason
        if decision.action == "request":
            assert decision.partition is not None and decision.run_key is not None
            self.history.append(RetrainRequest(now, decision.partition, decision.run_key, decision.causes))
            self.pending = []
            for cause in decision.causes:
                self.requested[cause] = self.requested.get(cause, 0) + 1
        elif decision.action in ("defer", "block"):
            events = [t for t in decision.triggers if t.cause != "freshness"]  # freshness is re-derived
            self.pending = events[-MAX_PENDING:]
        else:
            self.pending = []
        self.history = [r for r in self.history if now - r.at <= timedelta(days=HISTORY_DAYS)]

    def to_json(self) -> str:
        """Serialize as the sensor cursor."""
        return json.dumps(
            {
                "after_storage_id": self.after_storage_id,
                "after_live_storage_id": self.after_live_storage_id,
                "history": [
                    {
                        "at": r.at.isoformat(),
                        "partition": r.partition,
                        "run_key": r.run_key,
                        "causes": r.causes,
                    }
                    for r in self.history
                ],
                "pending": [t.to_dict() for t in self.pending],
                "last_note": self.last_note,
                "requested": self.requested,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> RetrainState:
        """Parse a cursor; an empty cursor is a fresh state."""
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            after_storage_id=int(data.get("after_storage_id", 0)),
            after_live_storage_id=int(data.get("after_live_storage_id", 0)),
            history=[
                RetrainRequest(
                    datetime.fromisoformat(r["at"]), r["partition"], r["run_key"], tuple(r["causes"])
                )
                for r in data.get("history", [])
            ],
            pending=[Trigger.from_dict(t) for t in data.get("pending", [])],
            last_note=str(data.get("last_note", "")),
            requested={str(k): int(v) for k, v in (data.get("requested") or {}).items()},
        )
