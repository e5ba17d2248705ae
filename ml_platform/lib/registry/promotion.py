"""Governed promotion of model versions through MLflow registry aliases.

A registered model has two aliases: ``challenger`` (the newest registered candidate) and
``champion`` (the version that serves). A candidate is evaluated against gates
(:mod:`ml_platform.lib.evaluation.gates`); :func:`decide` turns the gate results and the promotion
policy into a :class:`Decision`, and :meth:`ModelRegistry.apply` carries it out. Under the manual
policy a human approves with :meth:`ModelRegistry.promote`; :meth:`ModelRegistry.rollback` returns
the champion alias to the previous champion.

Every alias change, and every decision that left the aliases as they were, is written to the
:class:`~ml_platform.lib.registry.audit.AuditLog`. The alias is moved first and the event appended
after; if the append fails, the alias is moved back before the error is raised, so the registry and
its audit log never disagree silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from ml_platform.lib.evaluation.gates import GateResult
from ml_platform.lib.registry.audit import AliasEvent, AuditLog, canonical_evidence

Policy = Literal["automatic", "manual"]
POLICIES: Final = ("automatic", "manual")
CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
#: Model-version tag holding the evaluation evidence (JSON with a ``"gates"`` list).
EVALUATION_TAG: Final = "mlp.evaluation"


@dataclass(frozen=True)
class Decision:
    """What to do with an evaluated candidate, and why."""

    action: Literal["promote", "await_approval", "reject"]
    reason: str


def decide(policy: Policy, gates: Sequence[GateResult]) -> Decision:
    """Decide the fate of a candidate from its gate results.

    Any failed gate rejects it (the reason names each failed gate and its detail); no gates at all
    rejects it as not evaluated. Otherwise the automatic policy promotes it and the manual policy
    waits for a human approval.

    Raises:
        ValueError: for an unknown ``policy``.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if not gates:
        return Decision("reject", "not evaluated: no gate results")
    failed = [g for g in gates if not g.passed]
    if failed:
        return Decision("reject", "failed gates: " + "; ".join(f"{g.name} ({g.detail})" for g in failed))
    passed = ", ".join(g.name for g in gates)
    if policy == "automatic":
        return Decision("promote", f"passed all gates ({passed}); policy automatic")
    return Decision("await_approval", f"passed all gates ({passed}); policy manual: awaiting approval")


class PromotionRefused(RuntimeError):
    """A promotion or rollback was refused; the message names model, version and why."""


class NothingToRollBack(RuntimeError):
    """The model has had fewer than two champions, so there is no previous one to return to."""


def _is_not_found(exc: MlflowException) -> bool:
    return bool(exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST))


class ModelRegistry:
    """The aliases of one registered model, changed only through audited operations."""

    def __init__(self, client: mlflow.MlflowClient, model_name: str, audit: AuditLog) -> None:
        self.client = client
        self.model_name = model_name
        self.audit = audit

    def __repr__(self) -> str:
        return f"ModelRegistry({self.model_name!r}, audit={self.audit!r})"

    # ----------------------------------------------------------------------------------- aliases

    def alias_version(self, alias: str) -> str | None:
        """The version ``alias`` points to; None when the alias is unset.

        None too when the registered model does not exist yet: a fresh instance, before its first
        training run registers a version, has no champion (the cold start the retrain sensor, the
        drift report and the batch predictions handle), not a broken registry.

        Raises:
            MlflowException: when the registry fails (anything but "the model does not exist").
        """
        # The registered model lists its aliases: an unset alias is simply absent, so no "not found"
        # error has to be told apart from other failures (the sqlalchemy store reports a missing
        # alias as INVALID_PARAMETER_VALUE, the same code as an invalid alias name). Only the
        # model's own absence is told apart, by its RESOURCE_DOES_NOT_EXIST code.
        try:
            aliases = self.client.get_registered_model(self.model_name).aliases
        except MlflowException as exc:
            if _is_not_found(exc):
                return None
            raise
        version = aliases.get(alias)
        return None if version is None else str(version)

    def champion(self) -> str | None:
        """The champion version, or None."""
        return self.alias_version(CHAMPION)

    def challenger(self) -> str | None:
        """The challenger version, or None."""
        return self.alias_version(CHALLENGER)

    def _move_alias(self, alias: str, version: str | None) -> None:
        if version is None:
            self.client.delete_registered_model_alias(self.model_name, alias)
        else:
            self.client.set_registered_model_alias(self.model_name, alias, version)

    def _change_aliases(
        self,
        changes: Sequence[tuple[str, str | None]],
        *,
        action: str,
        version: str,
        previous_version: str | None,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any],
    ) -> AliasEvent:
        """Apply ``changes`` (alias -> version, None deletes) and append the event recording them.

        The first change is the one the event records. If a change or the append fails, the aliases
        already changed are put back before the error propagates.
        """
        canonical_evidence(evidence)  # invalid evidence must fail before any alias moves
        before = {alias: self.alias_version(alias) for alias, _ in changes}
        done: list[str] = []
        try:
            for alias, target in changes:
                self._move_alias(alias, target)
                done.append(alias)
            return self.audit.append(
                model_name=self.model_name,
                action=action,
                alias=changes[0][0],
                version=version,
                previous_version=previous_version,
                actor=actor,
                reason=reason,
                evidence=evidence,
            )
        except Exception as exc:
            for alias in reversed(done):
                try:
                    self._move_alias(alias, before[alias])
                except Exception as restore_exc:
                    raise RuntimeError(
                        f"model {self.model_name!r}: {action} of version {version} failed ({exc}) and alias"
                        f" {alias!r} could not be restored to {before[alias]!r} ({restore_exc}); the"
                        " registry now disagrees with the audit log"
                    ) from exc
            raise

    def mark_challenger(
        self, version: str, *, actor: str, evidence: Mapping[str, Any], reason: str | None = None
    ) -> AliasEvent:
        """Point the challenger alias at ``version`` and record a ``set_challenger`` event."""
        version = str(version)
        return self._change_aliases(
            [(CHALLENGER, version)],
            action="set_challenger",
            version=version,
            previous_version=self.challenger(),
            actor=actor,
            reason=reason or f"version {version} registered as the challenger",
            evidence=evidence,
        )

    # -------------------------------------------------------------------------------- evaluation

    def record_evaluation(self, version: str, evidence: Mapping[str, Any]) -> None:
        """Store the evaluation evidence of ``version`` as its :data:`EVALUATION_TAG` tag.

        Args:
            version: The evaluated model version.
            evidence: JSON object with key ``"gates"``: a list of :meth:`GateResult.to_dict`.

        Raises:
            ValueError: when ``evidence`` has no valid ``"gates"`` list or is not JSON.
        """
        version = str(version)
        context = f"evaluation evidence of model {self.model_name!r} version {version}"
        try:
            clean = canonical_evidence(evidence)
        except ValueError as exc:
            raise ValueError(f"{context}: {exc}") from exc
        gates = clean.get("gates")
        if not isinstance(gates, list):
            raise ValueError(f"{context}: needs a 'gates' list, got {type(gates).__name__}")
        try:
            for gate in gates:
                GateResult.from_dict(gate)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{context}: 'gates' holds an invalid gate result ({exc!r})") from exc
        self.client.set_model_version_tag(self.model_name, version, EVALUATION_TAG, json.dumps(clean))

    def evaluation(self, version: str) -> dict[str, Any] | None:
        """The evaluation evidence stored on ``version``; None when it was never evaluated.

        Raises:
            ValueError: when the tag holds no JSON object.
            MlflowException: when the version does not exist.
        """
        version = str(version)
        raw = self.client.get_model_version(self.model_name, version).tags.get(EVALUATION_TAG)
        if raw is None:
            return None
        try:
            evidence = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"model {self.model_name!r} version {version}: tag {EVALUATION_TAG} is not JSON ({exc})"
            ) from exc
        if not isinstance(evidence, dict):
            raise ValueError(
                f"model {self.model_name!r} version {version}: tag {EVALUATION_TAG} is not a JSON object"
            )
        return evidence

    def gates(self, version: str) -> list[GateResult] | None:
        """The gate results stored on ``version``; None when it was never evaluated."""
        evidence = self.evaluation(version)
        if evidence is None:
            return None
        return [GateResult.from_dict(g) for g in evidence.get("gates") or []]

    # ----------------------------------------------------------------------------------- decisions

    def apply(
        self, version: str, decision: Decision, *, actor: str, evidence: Mapping[str, Any]
    ) -> AliasEvent:
        """Carry out ``decision`` for ``version`` and record it.

        ``promote`` points the champion alias at ``version`` (and removes the challenger alias when
        it points at ``version``); ``reject`` and ``await_approval`` leave the aliases as they are.

        Raises:
            PromotionRefused: when promoting the version that already is the champion.
        """
        version = str(version)
        if decision.action == "promote":
            return self._promote(version, actor=actor, reason=decision.reason, evidence=evidence)
        return self.audit.append(
            model_name=self.model_name,
            action=decision.action,
            alias=None,
            version=version,
            previous_version=None,
            actor=actor,
            reason=decision.reason,
            evidence=evidence,
        )

    def _promote(self, version: str, *, actor: str, reason: str, evidence: Mapping[str, Any]) -> AliasEvent:
        champion = self.champion()
        if champion == version:
            raise PromotionRefused(f"model {self.model_name!r}: version {version} already is the champion")
        changes: list[tuple[str, str | None]] = [(CHAMPION, version)]
        if self.challenger() == version:
            changes.append((CHALLENGER, None))
        return self._change_aliases(
            changes,
            action="promote",
            version=version,
            previous_version=champion,
            actor=actor,
            reason=reason,
            evidence=evidence,
        )

    def promote(self, version: str, *, approver: str, reason: str) -> AliasEvent:
        """Manually approve ``version`` as the champion (the ``mlp promote`` command).

        The version must exist, carry an evaluation whose gates all passed and not already be the
        champion. The event's actor is ``user:<approver>`` and its evidence the stored evaluation.

        Raises:
            PromotionRefused: naming model, version and the reason for the refusal.
        """
        version = str(version)
        who = f"model {self.model_name!r} version {version}"
        if not approver or not approver.strip():
            raise PromotionRefused(f"{who}: a manual promotion needs a non-empty approver")
        try:
            self.client.get_model_version(self.model_name, version)
        except MlflowException as exc:
            if _is_not_found(exc):
                raise PromotionRefused(f"{who}: no such model version in the registry") from exc
            raise
        evidence = self.evaluation(version)
        if evidence is None:
            raise PromotionRefused(f"{who}: has not been evaluated (no {EVALUATION_TAG} tag)")
        gates = [GateResult.from_dict(g) for g in evidence.get("gates") or []]
        verdict = decide("manual", gates)
        if verdict.action == "reject":
            raise PromotionRefused(f"{who}: refused, {verdict.reason}")
        if self.champion() == version:
            raise PromotionRefused(f"{who}: already is the champion")
        return self._promote(version, actor=f"user:{approver.strip()}", reason=reason, evidence=evidence)

    # ------------------------------------------------------------------------------------ rollback

    def champion_stack(self) -> list[str]:
        """The champion history replayed from the audit log: promotions push, rollbacks pop."""
        stack: list[str] = []
        for event in self.history():
            if event.action == "promote" and event.version is not None:
                stack.append(event.version)
            elif event.action == "rollback" and stack:
                stack.pop()
        return stack

    def rollback(self, *, actor: str, reason: str) -> AliasEvent:
        """Point the champion alias back at the previous champion and record a ``rollback`` event.

        Raises:
            NothingToRollBack: when the model has had fewer than two champions (net of rollbacks).
            PromotionRefused: when the live champion alias is not the champion the audit log says it
                is (it was moved outside the platform): the log cannot tell what to return to.
        """
        stack = self.champion_stack()
        if len(stack) < 2:
            current = stack[-1] if stack else None
            raise NothingToRollBack(
                f"model {self.model_name!r}: no previous champion to roll back to"
                f" (champion history from the audit log: {stack or 'empty'}; current {current!r})"
            )
        live = self.champion()
        if live != stack[-1]:
            raise PromotionRefused(
                f"model {self.model_name!r}: the champion alias points at version {live!r} but the audit log"
                f" says version {stack[-1]} is the champion; the alias was moved outside the platform,"
                " so rollback refuses to guess. Restore the alias or promote through the platform first."
            )
        target = stack[-2]
        return self._change_aliases(
            [(CHAMPION, target)],
            action="rollback",
            version=target,
            previous_version=live,
            actor=actor,
            reason=reason,
            evidence={"rolled_back_version": live, "restored_version": target, "champion_history": stack},
        )

    def history(self) -> list[AliasEvent]:
        """This model's audit events, oldest first."""
        return self.audit.events(self.model_name)
