"""The retrain sensor's decision logic: guardrails, run keys, and the state kept between ticks.

``decide`` is checked guardrail by guardrail (defer, cooldown, daily cap, request), ``RetrainState``
for what it keeps and forgets, and a simulated run of daily ticks, driven the way the sensor drives
them (pending plus new triggers, state through its JSON cursor each tick), shows the guardrails
hold over time: exactly the expected requests, each with its own run key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ml_platform.lib.monitoring.retrain import (
    CAUSES,
    HISTORY_DAYS,
    MAX_PENDING,
    RetrainDecision,
    RetrainPolicy,
    RetrainRequest,
    RetrainState,
    Target,
    Trigger,
    decide,
    run_key,
)

NOW = datetime(2013, 4, 10, 12, 0, tzinfo=UTC)
PARTITION = "2013-04-01"
UNTRAINED = Target(PARTITION, up_to_date=False)
#: No cooldown, no practical cap: only the guardrail under test can stop a request.
OPEN = RetrainPolicy(cooldown=timedelta(0), max_per_day=100)


def drift(day: str = "2013-04-09", summary: str = "temp mean_shift 6.73 >= 5 (error)") -> Trigger:
    return Trigger(
        "drift",
        day,
        summary,
        {"features": [{"feature": "temp", "measure": "mean_shift", "score": 6.73, "limit": 5.0}]},
    )


def degradation(day: str = "2013-04-08") -> Trigger:
    return Trigger("degradation", day, "live MAE 21.4 > 18.0", {"mae": 21.4, "limit": 18.0})


def freshness(day: str = "2013-04-09") -> Trigger:
    return Trigger("freshness", day, "champion 45 days old > 30", {"age_days": 45, "max_age_days": 30})


def requested(at: datetime, partition: str = "2013-03-25") -> RetrainRequest:
    return RetrainRequest(at, partition, f"retrain:{partition}:drift@{at:%Y-%m-%d}", ("drift",))


# --- decide: no triggers, request, run key ---------------------------------------------------------


def test_no_triggers_no_decision() -> None:
    """Without a trigger there is nothing to decide, whatever the target and history."""
    assert decide([], UNTRAINED, [], NOW, OPEN) is None
    assert decide([], Target(None, False, "no week"), [requested(NOW)], NOW, OPEN) is None


def test_drift_on_an_untrained_target_is_a_request() -> None:
    """A drift trigger and a trainable partition: a request keyed by partition, cause and day."""
    decision = decide([drift()], UNTRAINED, [], NOW, OPEN)
    assert decision is not None
    assert decision.action == "request"
    assert decision.partition == PARTITION
    assert decision.run_key == f"retrain:{PARTITION}:drift@2013-04-09"
    assert decision.causes == ("drift",)
    assert "drift" in decision.reason
    assert "2013-04-09" in decision.reason
    assert "temp mean_shift 6.73 >= 5 (error)" in decision.reason
    assert decision.to_dict()["causes"] == ["drift"]


def test_causes_are_in_precedence_order_and_drift_names_the_run_key() -> None:
    """Triggers come out drift, degradation, freshness; with drift and freshness the key is drift's."""
    decision = decide([freshness("2013-04-01"), degradation(), drift()], UNTRAINED, [], NOW, OPEN)
    assert decision is not None and decision.action == "request"
    assert CAUSES == ("drift", "degradation", "freshness")
    assert decision.causes == CAUSES
    assert [t.cause for t in decision.triggers] == list(CAUSES)
    assert decision.reason.index("drift") < decision.reason.index("degradation")
    assert decision.reason.index("degradation") < decision.reason.index("freshness")

    both = decide([freshness("2013-04-01"), drift("2013-04-09")], UNTRAINED, [], NOW, OPEN)
    assert both is not None
    assert both.run_key == f"retrain:{PARTITION}:drift@2013-04-09"
    assert both.causes == ("drift", "freshness")


def test_the_earliest_day_of_the_leading_cause_names_the_run_key() -> None:
    """Two drift days: the earlier one leads, whatever order the triggers came in."""
    triggers = [drift("2013-04-09"), drift("2013-04-07")]
    assert run_key(PARTITION, triggers) == f"retrain:{PARTITION}:drift@2013-04-07"
    assert run_key(PARTITION, triggers[::-1]) == f"retrain:{PARTITION}:drift@2013-04-07"


def test_same_evidence_same_run_key_other_day_other_key() -> None:
    """The run key de-duplicates: the same evidence twice is one run; another day is another run."""
    first = decide([drift("2013-04-09")], UNTRAINED, [], NOW, OPEN)
    again = decide([drift("2013-04-09")], UNTRAINED, [], NOW + timedelta(hours=5), OPEN)
    other = decide([drift("2013-04-10")], UNTRAINED, [], NOW, OPEN)
    assert first is not None and again is not None and other is not None
    assert first.run_key == again.run_key
    assert first.run_key != other.run_key
    assert run_key("2013-04-08", [drift()]) != run_key(PARTITION, [drift()])


# --- decide: defer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        Target(None, False, "no week with a complete holdout week yet"),
        Target(PARTITION, True, f"{PARTITION} is already trained from the same features and code"),
    ],
    ids=["no-partition", "up-to-date"],
)
def test_no_target_or_up_to_date_target_defers_with_its_reason(target: Target) -> None:
    """Retraining would reproduce the same model: defer, saying why, without a run key."""
    decision = decide([drift(), freshness()], target, [], NOW, OPEN)
    assert decision is not None
    assert decision.action == "defer"
    assert decision.reason == target.reason
    assert decision.partition == target.partition
    assert decision.run_key is None
    assert decision.causes == ("drift", "freshness")


def test_defer_without_a_reason_says_there_is_no_partition() -> None:
    """A target without a reason still gives a deferral that explains itself."""
    decision = decide([drift()], Target(None, False), [], NOW, OPEN)
    assert decision is not None and decision.action == "defer"
    assert decision.reason == "no model partition to train"


def test_defer_comes_before_the_cooldown() -> None:
    """An up-to-date target defers even inside a cooldown (guardrail 1 before guardrail 2)."""
    policy = RetrainPolicy(timedelta(hours=24), 1)
    target = Target(PARTITION, True, "already trained")
    decision = decide([drift()], target, [requested(NOW - timedelta(hours=1))], NOW, policy)
    assert decision is not None and decision.action == "defer"


BROKEN = Target(
    PARTITION,
    False,
    broken="flight_features[2013-03-20]: materialization (run r1) lacks lineage metadata"
    " 'storage/content_hash'; rematerialize it",
)


def test_a_broken_record_blocks_instead_of_requesting_and_names_it() -> None:
    """A target whose records cannot be judged is never retrained: blocked, naming what is broken."""
    decision = decide([drift(), freshness()], BROKEN, [], NOW, OPEN)
    assert decision is not None
    assert decision.action == "block"
    assert decision.reason == f"retrain blocked: {BROKEN.broken}"
    assert "flight_features[2013-03-20]" in decision.reason and "'storage/content_hash'" in decision.reason
    assert decision.partition == PARTITION and decision.run_key is None
    assert decision.causes == ("drift", "freshness")
    assert decision.to_dict()["action"] == "block"


def test_block_comes_before_every_other_guardrail() -> None:
    """Broken records block even inside a cooldown or past the daily cap."""
    policy = RetrainPolicy(timedelta(hours=24), 1)
    decision = decide([drift()], BROKEN, [requested(NOW - timedelta(hours=1))], NOW, policy)
    assert decision is not None and decision.action == "block"


def test_record_a_block_keeps_event_triggers_until_the_record_is_repaired() -> None:
    """Drift seen while blocked waits in the state: once the record is repaired, the retrain goes."""
    state = RetrainState()
    blocked = decide([freshness(), drift()], BROKEN, [], NOW, OPEN)
    assert blocked is not None
    assert state.is_news(blocked, new_evidence=False)
    state.record(blocked, NOW)
    assert [t.cause for t in state.pending] == ["drift"] and state.history == []
    again = decide([*state.pending, freshness()], BROKEN, [], NOW + timedelta(minutes=1), OPEN)
    assert again is not None and not state.is_news(again, new_evidence=False)  # reported once
    repaired = decide([*state.pending, freshness()], UNTRAINED, [], NOW + timedelta(hours=1), OPEN)
    assert repaired is not None and repaired.action == "request"
    assert repaired.run_key == f"retrain:{PARTITION}:drift@2013-04-09"


# --- decide: cooldown ------------------------------------------------------------------------------


def test_a_request_inside_the_cooldown_suppresses() -> None:
    """A request 23 h ago with a 24 h cooldown: suppress, naming the cooldown and when it ends."""
    policy = RetrainPolicy(timedelta(hours=24), max_per_day=10)
    last = NOW - timedelta(hours=23)
    decision = decide([drift()], UNTRAINED, [requested(last)], NOW, policy)
    assert decision is not None
    assert decision.action == "suppress"
    assert decision.run_key is None
    assert decision.partition == PARTITION
    assert "cooldown" in decision.reason
    assert "2013-03-25" in decision.reason  # the partition last requested
    assert f"{last:%Y-%m-%d %H:%M} UTC" in decision.reason
    assert "next request allowed from 2013-04-10 13:00 UTC" in decision.reason


def test_a_request_past_the_cooldown_does_not_suppress() -> None:
    """A request 25 h ago with a 24 h cooldown (and another day): request."""
    policy = RetrainPolicy(timedelta(hours=24), max_per_day=1)
    decision = decide([drift()], UNTRAINED, [requested(NOW - timedelta(hours=25))], NOW, policy)
    assert decision is not None and decision.action == "request"


def test_the_cooldown_names_the_latest_request() -> None:
    """Several requests in the cooldown: the latest one sets when the next is allowed."""
    policy = RetrainPolicy(timedelta(hours=24), max_per_day=10)
    history = [requested(NOW - timedelta(hours=20)), requested(NOW - timedelta(hours=2), "2013-04-01")]
    decision = decide([drift()], UNTRAINED, history, NOW, policy)
    assert decision is not None and decision.action == "suppress"
    assert "next request allowed from 2013-04-11 10:00 UTC" in decision.reason


# --- decide: daily cap -----------------------------------------------------------------------------


def test_the_daily_cap_suppresses() -> None:
    """Cooldown 0, two requests earlier the same UTC day, at most 2 a day: suppress."""
    policy = RetrainPolicy(timedelta(0), max_per_day=2)
    history = [requested(NOW - timedelta(hours=10)), requested(NOW - timedelta(hours=1))]
    decision = decide([drift()], UNTRAINED, history, NOW, policy)
    assert decision is not None
    assert decision.action == "suppress"
    assert "daily cap" in decision.reason
    assert "2 retrain request(s) today, at most 2" in decision.reason
    assert decision.run_key is None


def test_one_request_today_is_under_a_cap_of_two() -> None:
    """Below the cap the request goes through."""
    policy = RetrainPolicy(timedelta(0), max_per_day=2)
    decision = decide([drift()], UNTRAINED, [requested(NOW - timedelta(hours=1))], NOW, policy)
    assert decision is not None and decision.action == "request"


def test_requests_of_the_previous_utc_day_do_not_count() -> None:
    """Requests late yesterday (UTC) are not today's, even minutes before midnight."""
    policy = RetrainPolicy(timedelta(0), max_per_day=2)
    now = datetime(2013, 4, 10, 0, 30, tzinfo=UTC)
    history = [requested(datetime(2013, 4, 9, 23, 0, tzinfo=UTC)), requested(now - timedelta(hours=1))]
    decision = decide([drift()], UNTRAINED, history, now, policy)
    assert decision is not None and decision.action == "request"


def test_the_daily_cap_compares_utc_dates_of_aware_datetimes() -> None:
    """Datetimes in another zone are counted by their UTC date, not their local date."""
    policy = RetrainPolicy(timedelta(0), max_per_day=1)
    berlin = timezone(timedelta(hours=2))
    # 2013-04-10 01:00 +02:00 is 2013-04-09 23:00 UTC: the same UTC day as a request at 10:00 UTC.
    now = datetime(2013, 4, 10, 1, 0, tzinfo=berlin)
    same_utc_day = decide(
        [drift()], UNTRAINED, [requested(datetime(2013, 4, 9, 10, tzinfo=UTC))], now, policy
    )
    assert same_utc_day is not None and same_utc_day.action == "suppress"
    assert "daily cap" in same_utc_day.reason
    # A request at 2013-04-10 00:30 +02:00 (2013-04-09 22:30 UTC) shares a local date with noon UTC
    # of 2013-04-10 but not a UTC date: it does not count.
    local_only = decide(
        [drift()], UNTRAINED, [requested(datetime(2013, 4, 10, 0, 30, tzinfo=berlin))], NOW, policy
    )
    assert local_only is not None and local_only.action == "request"


def test_a_cap_below_one_is_refused() -> None:
    """max_per_day=0 would silently disable retraining: it is a configuration error."""
    with pytest.raises(ValueError, match="max_per_day"):
        RetrainPolicy(timedelta(hours=24), max_per_day=0)
    with pytest.raises(ValueError, match="max_per_day"):
        RetrainPolicy(timedelta(hours=24), max_per_day=-1)


# --- RetrainState.record ---------------------------------------------------------------------------


def test_record_a_request_appends_history_and_clears_pending() -> None:
    """A request joins the history with its partition, key and causes; pending and note are cleared."""
    state = RetrainState(pending=[drift("2013-04-05")], last_note="deferred before")
    decision = decide([*state.pending, freshness()], UNTRAINED, state.history, NOW, OPEN)
    assert decision is not None and decision.action == "request"
    state.record(decision, NOW)
    assert state.history == [
        RetrainRequest(NOW, PARTITION, f"retrain:{PARTITION}:drift@2013-04-05", ("drift", "freshness"))
    ]
    assert state.pending == []
    assert state.last_note == ""


def test_record_a_deferral_keeps_event_triggers_but_not_freshness() -> None:
    """Deferred drift and degradation wait for a newer partition; freshness is re-derived each tick."""
    state = RetrainState()
    target = Target(None, False, "no week yet")
    decision = decide([freshness(), drift(), degradation()], target, [], NOW, OPEN)
    assert decision is not None and decision.action == "defer"
    state.record(decision, NOW)
    assert [t.cause for t in state.pending] == ["drift", "degradation"]
    assert state.last_note == "no week yet"
    assert state.history == []


def test_record_a_deferral_caps_pending() -> None:
    """At most MAX_PENDING deferred triggers are kept, the latest days of them."""
    days = [f"2013-03-{d:02d}" for d in range(1, MAX_PENDING + 6)]
    decision = decide([drift(d) for d in days], Target(None, False, "none"), [], NOW, OPEN)
    assert decision is not None
    state = RetrainState()
    state.record(decision, NOW)
    assert len(state.pending) == MAX_PENDING
    assert [t.day for t in state.pending] == days[-MAX_PENDING:]


def test_record_a_suppression_drops_pending() -> None:
    """Suppressed triggers are dropped; the note says why."""
    policy = RetrainPolicy(timedelta(hours=24), 1)
    state = RetrainState(history=[requested(NOW - timedelta(hours=1))], pending=[drift("2013-04-05")])
    decision = decide([*state.pending, drift()], UNTRAINED, state.history, NOW, policy)
    assert decision is not None and decision.action == "suppress"
    state.record(decision, NOW)
    assert state.pending == []
    assert state.last_note == decision.reason
    assert len(state.history) == 1


def test_record_prunes_history_older_than_history_days() -> None:
    """Requests older than HISTORY_DAYS leave the history; the rest stay, in order."""
    old = requested(NOW - timedelta(days=HISTORY_DAYS, hours=1))
    edge = requested(NOW - timedelta(days=HISTORY_DAYS))
    recent = requested(NOW - timedelta(days=2))
    state = RetrainState(history=[old, edge, recent])
    decision = decide([drift()], Target(None, False, "none"), state.history, NOW, OPEN)
    assert decision is not None
    state.record(decision, NOW)
    assert state.history == [edge, recent]


# --- RetrainState.is_news --------------------------------------------------------------------------


def test_a_request_is_always_news() -> None:
    """Requests are recorded and alerted even with no new evidence and an unchanged note."""
    decision = RetrainDecision("request", "r", (drift(),), PARTITION, "retrain:k")
    assert RetrainState(last_note="r").is_news(decision, new_evidence=False)


def test_a_standing_deferral_is_news_once() -> None:
    """The same deferral again without new evidence is not news; new evidence or a new reason is."""
    state = RetrainState()
    target = Target(None, False, "no week with a complete holdout week yet")
    first = decide([freshness()], target, [], NOW, OPEN)
    assert first is not None
    assert state.is_news(first, new_evidence=False)
    state.record(first, NOW)

    again = decide([freshness("2013-04-10")], target, [], NOW + timedelta(minutes=1), OPEN)
    assert again is not None
    assert not state.is_news(again, new_evidence=False)
    assert state.is_news(again, new_evidence=True)

    changed = decide([freshness()], Target(PARTITION, True, "already trained"), [], NOW, OPEN)
    assert changed is not None
    assert state.is_news(changed, new_evidence=False)


# --- RetrainState JSON -----------------------------------------------------------------------------


def test_state_json_round_trip() -> None:
    """Every field survives the cursor, trigger details and aware datetimes included."""
    state = RetrainState(
        after_storage_id=4242,
        history=[
            RetrainRequest(NOW, PARTITION, f"retrain:{PARTITION}:drift@2013-04-09", ("drift", "freshness")),
            RetrainRequest(
                datetime(2013, 4, 11, 1, 30, tzinfo=timezone(timedelta(hours=2))),
                "2013-04-08",
                "retrain:2013-04-08:freshness@2013-04-10",
                ("freshness",),
            ),
        ],
        pending=[drift(), degradation()],
        last_note="cooldown: something",
    )
    text = state.to_json()
    json.loads(text)  # a plain JSON document
    back = RetrainState.from_json(text)
    assert back == state
    assert [t.detail for t in back.pending] == [t.detail for t in state.pending]  # detail: compare=False
    assert [r.at.utcoffset() for r in back.history] == [r.at.utcoffset() for r in state.history]
    assert back.to_json() == text


@pytest.mark.parametrize("text", [None, ""])
def test_an_empty_cursor_is_a_fresh_state(text: str | None) -> None:
    """The sensor's first tick has no cursor."""
    assert RetrainState.from_json(text) == RetrainState()


# --- guardrails over time --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    """What one simulated tick decided."""

    day: int
    action: str | None
    run_key: str | None
    news: bool


def _tick(
    cursor: str, triggers: list[Trigger], target: Target, now: datetime, policy: RetrainPolicy
) -> tuple[str, RetrainDecision | None, bool]:
    """One sensor tick as ``ml_platform.defs.monitoring.sensors`` runs it, state through its cursor."""
    state = RetrainState.from_json(cursor)
    decision = decide([*state.pending, *triggers], target, state.history, now, policy)
    news = decision is not None and state.is_news(decision, any(t.cause != "freshness" for t in triggers))
    if decision is not None:
        state.record(decision, now)
    return state.to_json(), decision, news


def test_guardrails_hold_over_ten_daily_ticks() -> None:
    """Ten daily ticks: drift on days 3 and 4, a new week trainable from day 5, freshness from day 6.

    A 72 h cooldown and one request a day. Day 3 requests the old week; day 4's drift finds it
    already trained and waits; day 5 the new week is trainable but the cooldown holds (and drops
    the waiting drift); day 6 freshness requests the new week; afterwards every tick defers, and
    the standing deferral is reported once.
    """
    policy = RetrainPolicy(timedelta(hours=72), max_per_day=1)
    start = datetime(2013, 4, 1, 6, 0, tzinfo=UTC)
    old_week, new_week = "2013-03-25", "2013-04-01"
    trained: set[str] = set()
    cursor = ""
    ticks: list[Tick] = []
    for day in range(1, 11):
        now = start + timedelta(days=day - 1)
        data_day = f"{now:%Y-%m-%d}"
        triggers = []
        if day in (3, 4):
            triggers.append(drift(data_day))
        if day >= 6:
            triggers.append(freshness(data_day))
        partition = new_week if day >= 5 else old_week
        target = Target(partition, partition in trained, f"{partition} is already trained")
        cursor, decision, news = _tick(cursor, triggers, target, now, policy)
        if decision is not None and decision.action == "request":
            assert decision.partition is not None
            trained.add(decision.partition)  # the run trains the partition before the next tick
        ticks.append(
            Tick(day, decision.action if decision else None, decision.run_key if decision else None, news)
        )

    assert [(t.day, t.action) for t in ticks] == [
        (1, None),
        (2, None),
        (3, "request"),
        (4, "defer"),
        (5, "suppress"),
        (6, "request"),
        (7, "defer"),
        (8, "defer"),
        (9, "defer"),
        (10, "defer"),
    ]
    assert [(t.day, t.run_key) for t in ticks if t.action == "request"] == [
        (3, f"retrain:{old_week}:drift@2013-04-03"),
        (6, f"retrain:{new_week}:freshness@2013-04-06"),
    ]
    assert [t.day for t in ticks if t.news] == [3, 4, 5, 6, 7]
    final = RetrainState.from_json(cursor)
    assert [r.partition for r in final.history] == [old_week, new_week]
    assert final.pending == []
    assert final.last_note == f"{new_week} is already trained"


def test_deferred_drift_requests_the_next_trainable_week() -> None:
    """A drift that finds its week trained waits in the cursor and requests the next week, once."""
    policy = RetrainPolicy(timedelta(hours=24), max_per_day=1)
    start = datetime(2013, 4, 1, 6, 0, tzinfo=UTC)
    cursor = ""
    actions: list[tuple[str | None, str | None]] = []
    for day in range(1, 6):
        now = start + timedelta(days=day - 1)
        triggers = [drift("2013-04-02")] if day == 2 else []
        target = Target("2013-04-01", False) if day == 4 else Target("2013-03-25", True, "trained")
        cursor, decision, _ = _tick(cursor, triggers, target, now, policy)
        actions.append((decision.action, decision.run_key) if decision else (None, None))
    assert actions == [
        (None, None),
        ("defer", None),
        ("defer", None),
        ("request", "retrain:2013-04-01:drift@2013-04-02"),
        (None, None),
    ]


def test_hourly_ticks_respect_the_daily_cap() -> None:
    """Fresh drift every hour for three days, always a trainable week: exactly the cap per UTC day."""
    policy = RetrainPolicy(timedelta(0), max_per_day=2)
    start = datetime(2013, 4, 1, 0, 0, tzinfo=UTC)
    cursor = ""
    requests: list[datetime] = []
    keys: set[str] = set()
    for hour in range(72):
        now = start + timedelta(hours=hour)
        target = Target(f"week-{hour}", False)
        cursor, decision, _ = _tick(cursor, [drift(f"{now:%Y-%m-%dT%H}")], target, now, policy)
        assert decision is not None
        if decision.action == "request":
            assert decision.run_key is not None
            requests.append(now)
            keys.add(decision.run_key)
    assert [(r.day, r.hour) for r in requests] == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert len(keys) == len(requests)
