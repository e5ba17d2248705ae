"""The desired deployment state: planning each strategy, the supervisor's own transitions, the file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from ml_platform.lib.deploy.desired import (
    DeploymentRefused,
    DesiredState,
    DesiredStateError,
    DesiredStateStore,
    Release,
    Request,
    after_promotion,
    after_rollback,
    plan,
)
from ml_platform.lib.deploy.rollback import CanaryThresholds
from ml_platform.lib.deploy.router import RoutingPolicy

V1 = Release("delay_service:v1-aaa", "delay_model", "1", "2013-01-07", "run-1")
V2 = Release("delay_service:v2-bbb", "delay_model", "2", "2013-01-14", "run-2")
V3 = Release("delay_service:v3-ccc", "delay_model", "3", "2013-01-21", "run-3")
ASK = Request("test", "because", CanaryThresholds(min_requests=5), promote_after_s=60.0)


def deployed(*steps: tuple[Release, str]) -> DesiredState:
    state = None
    for release, strategy in steps:
        state, _ = plan(state, release, strategy, ASK)  # type: ignore[arg-type]
    assert state is not None
    return state


def test_the_first_deploy_serves_the_release_whatever_the_strategy() -> None:
    for strategy in ("blue_green", "canary", "shadow"):
        state, note = plan(None, V1, strategy, ASK)  # type: ignore[arg-type]
        assert state is not None and state.generation == 1
        assert (state.champion, state.challenger, state.mode, state.share) == (V1, None, "single", 0.0)
        assert state.promote_after_s is None and "first deploy" in note


def test_canary_shadow_and_blue_green_from_a_running_champion() -> None:
    one = deployed((V1, "canary"))
    canary, note = plan(one, V2, "canary", ASK, share=0.25)
    assert canary is not None and canary.generation == 2
    assert (canary.champion, canary.challenger, canary.mode, canary.share) == (V1, V2, "canary", 0.25)
    assert canary.policy() == RoutingPolicy.canary(0.25, sticky_header="X-Request-ID")
    assert canary.promote_after_s == 60.0 and "25%" in note
    shadow, _ = plan(one, V2, "shadow", ASK)
    assert shadow is not None and (shadow.mode, shadow.share, shadow.challenger) == ("shadow", 0.0, V2)
    assert shadow.promote_after_s is None  # a shadow never answers, so it is never promoted by itself
    switched, note = plan(one, V2, "blue_green", ASK)
    assert switched is not None and (switched.champion, switched.challenger, switched.mode) == (
        V2,
        None,
        "single",
    )
    assert "replaces" in note


def test_blue_green_of_the_challenger_promotes_it_and_the_champion_stops_the_canary() -> None:
    canary = deployed((V1, "canary"), (V2, "canary"))
    promoted, note = plan(canary, V2, "blue_green", ASK)
    assert promoted is not None and (promoted.champion, promoted.challenger) == (V2, None)
    assert "promoted" in note
    stopped, note = plan(canary, V1, "canary", ASK)
    assert stopped is not None and (stopped.champion, stopped.challenger, stopped.mode) == (
        V1,
        None,
        "single",
    )
    assert "stops" in note
    replaced, _ = plan(canary, V3, "canary", ASK)  # a newer challenger replaces the running one
    assert replaced is not None and (replaced.champion, replaced.challenger) == (V1, V3)


def test_nothing_changes_when_the_state_already_is_the_request() -> None:
    one = deployed((V1, "blue_green"))
    assert plan(one, V1, "canary", ASK) == (None, "delay_model v1 already serves everything")
    canary = deployed((V1, "canary"), (V2, "canary"))
    same, note = plan(canary, V2, "canary", ASK)
    assert same is None and "already" in note
    other_share, _ = plan(canary, V2, "canary", ASK, share=0.5)
    assert other_share is not None and other_share.share == 0.5


def test_a_rolled_back_bento_is_refused_unless_forced() -> None:
    canary = deployed((V1, "canary"), (V2, "canary"))
    back = after_rollback(canary, V2.bento_tag, "error rate 50% above 5%", "policy:canary-guard")
    assert back is not None and back.generation == canary.generation + 1
    assert (back.champion, back.challenger, back.mode, back.rolled_back) == (
        V1,
        None,
        "single",
        (V2.bento_tag,),
    )
    assert back.requested_by == "policy:canary-guard" and "error rate" in back.reason
    assert after_rollback(back, V2.bento_tag, "again", "x") is None  # nothing left to roll back
    with pytest.raises(DeploymentRefused, match="was rolled back"):
        plan(back, V2, "canary", ASK)
    with pytest.raises(DeploymentRefused):
        plan(back, V2, "blue_green", ASK)
    forced, _ = plan(back, V2, "canary", ASK, force=True)
    assert forced is not None and forced.challenger == V2 and forced.rolled_back == ()


def test_promotion_makes_the_canary_champion() -> None:
    canary = deployed((V1, "canary"), (V2, "canary"))
    promoted = after_promotion(canary, V2.bento_tag, "healthy", "policy:canary-promote")
    assert promoted is not None and (promoted.champion, promoted.challenger, promoted.mode) == (
        V2,
        None,
        "single",
    )
    assert after_promotion(canary, V3.bento_tag, "healthy", "x") is None
    shadow = deployed((V1, "canary"), (V2, "shadow"))
    assert after_promotion(shadow, V2.bento_tag, "healthy", "x") is None  # only a canary is promoted


def test_invalid_requests_and_states_are_refused() -> None:
    one = deployed((V1, "canary"))
    with pytest.raises(ValueError, match="strategy"):
        plan(one, V2, "rolling", ASK)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="share"):
        plan(one, V2, "canary", ASK, share=0.0)
    with pytest.raises(ValueError, match="challenger"):
        DesiredState(**{**one.__dict__, "mode": "canary", "share": 0.1})
    with pytest.raises(ValueError, match="both champion and challenger"):
        DesiredState(**{**one.__dict__, "challenger": V1, "mode": "shadow"})


def test_the_store_round_trips_and_serializes_writers(tmp_path: Path) -> None:
    store = DesiredStateStore(tmp_path / "deployment" / "desired.json")
    assert store.read() is None
    first, changed = store.update(lambda current: plan(current, V1, "canary", ASK)[0])
    assert changed and first is not None and store.read() == first
    second, changed = store.update(lambda current: plan(current, V2, "canary", ASK)[0])
    assert changed and store.read() == second and second is not None and second.generation == 2
    unchanged, changed = store.update(lambda current: plan(current, V2, "canary", ASK)[0])
    assert not changed and unchanged == second

    # eight writers at once: each reads what the previous one wrote, no generation is lost
    releases = [Release(f"delay_service:w{i}", "delay_model", str(10 + i)) for i in range(8)]
    barrier = threading.Barrier(len(releases))

    def write(release: Release) -> None:
        barrier.wait()
        store.update(lambda current: plan(current, release, "blue_green", ASK)[0])

    threads = [threading.Thread(target=write, args=(r,)) for r in releases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.read()
    assert final is not None and final.generation == 2 + len(releases)

    with pytest.raises(DesiredStateError, match="generation"):
        store.update(lambda current: plan(None, V3, "canary", ASK)[0])  # skips back to generation 1
    data = json.loads(store.path.read_text())
    store.path.write_text(json.dumps({**data, "format": 99}))
    with pytest.raises(DesiredStateError, match="format"):
        store.read()
