"""risk-config scopes: a change applied or rejected as a whole (`_apply_config`), a
position's effective config (defaults < global < asset: < position: < its own), the
merged configs cached, and `GET /config`'s view."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from stream_risk.config import (
    SCOPE_ASSET,
    SCOPE_GLOBAL,
    SCOPE_POSITION,
    RiskConfig,
)
from stream_risk.engine.base import EngineParts
from stream_risk.engine.events import (
    ConfigEvent,
    Rejected,
    StepResult,
    Trigger,
)


class ScopesMixin(EngineParts):
    def _effective(
        self,
        pid: str,
        asset: str,
        own: dict[str, Any],
        scopes: dict[str, tuple[dict[str, Any], int]],
    ) -> tuple[RiskConfig | None, dict[str, int] | None]:
        """A position's config: defaults < global < asset: < position: < its own `config`;
        and the offsets of the scopes applied. Raises ValidationError on a conflict."""
        if not scopes:
            return self._config_for(own), None
        merged: dict[str, Any] = {}
        version: dict[str, int] = {}
        for scope in (SCOPE_GLOBAL, SCOPE_ASSET + asset, SCOPE_POSITION + pid):
            hit = scopes.get(scope)
            if hit is not None:
                merged.update(hit[0])
                version[scope] = hit[1]
        merged.update(own)
        return self._config_for(merged), (version or None)

    def _apply_config(
        self, ev: ConfigEvent, now_ms: int, affected: dict[str, Trigger], res: StepResult
    ) -> int:
        """A risk-config record: change a scope's overrides, re-assess what it covers.

        Applied only if the scope's config and every covered position's effective config
        still validate as a whole (else rejected: the previous config stays in force).
        Covered positions get trigger `config` (a position update in the same step wins).
        Returns the event time of the change (its record's time, at most `now_ms`; -1 when
        rejected): the re-assessments are as of it.
        """
        scope, patch, lin = ev.scope, ev.patch, ev.lineage
        new = dict(self.scopes)
        if patch is None:
            new.pop(scope, None)
        else:
            new[scope] = (patch, lin.offset)
        table = self.table
        if scope == SCOPE_GLOBAL:
            covered: Iterable[str] = list(table.positions)
        elif scope.startswith(SCOPE_ASSET):
            covered = list(table.by_asset.get(scope[len(SCOPE_ASSET) :], ()))
        else:
            pid = scope[len(SCOPE_POSITION) :]
            covered = [pid] if pid in table.positions else []
        entry: dict[str, Any] = {
            "scope": scope,
            "value": patch,
            "offset": lin.offset,
            "partition": lin.partition,
            "ts": lin.timestamp_ms,
            "applied_at": now_ms,
            "changed_by": ev.changed_by,
        }
        updates = []
        try:
            # The scope on its own chain (a conflict shows even with no position covered).
            probe = scope[len(SCOPE_POSITION) :] if scope.startswith(SCOPE_POSITION) else ""
            probe_asset = scope[len(SCOPE_ASSET) :] if scope.startswith(SCOPE_ASSET) else ""
            self._effective(probe, probe_asset, {}, new)
            for pid in covered:
                pos = table.positions[pid]
                updates.append((pos, *self._effective(pid, pos.asset, pos.overrides or {}, new)))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err.get("loc", ())) or "config"
            reason = f"invalid risk-config {scope!r}: {where}: {err['msg']}"
            self.stats.config_rejected += 1
            entry["status"] = "rejected"
            entry["applied"] = False
            entry["error"] = reason
            self.config_history.append(entry)
            res.rejected.append(Rejected(reason, lin))
            return -1
        self.scopes = new
        self.stats.config_changes += 1
        entry["status"] = "applied"
        entry["applied"] = True
        entry["positions"] = len(updates)
        self.config_history.append(entry)
        for pos, cfg, version in updates:
            pos.config = cfg
            pos.config_version = version
            pid = pos.position_id
            if affected.get(pid) != "position":
                affected[pid] = "config"
        return min(lin.timestamp_ms, now_ms)

    def config_view(self) -> dict[str, Any]:
        """`GET /config`: the config in force per scope, and the history of changes."""
        base = self.config.risk
        scopes: dict[str, Any] = {}
        for scope in sorted(self.scopes, key=_scope_order):
            fields, offset = self.scopes[scope]
            chain: dict[str, Any] = {}
            if scope != SCOPE_GLOBAL and SCOPE_GLOBAL in self.scopes:
                chain.update(self.scopes[SCOPE_GLOBAL][0])
            if scope.startswith(SCOPE_POSITION):
                pos = self.table.positions.get(scope[len(SCOPE_POSITION) :])
                if pos is not None:
                    hit = self.scopes.get(SCOPE_ASSET + pos.asset)
                    if hit is not None:
                        chain.update(hit[0])
            chain.update(fields)
            scopes[scope] = {
                "overrides": fields,
                "offset": offset,
                "effective": base.merged(chain).model_dump(),
            }
        return {
            "defaults": base.model_dump(),
            "precedence": ["defaults", "global", "asset:<ASSET>", "position:<ID>", "message"],
            "scopes": scopes,
            # In record order: a refused record is noted when it is read (the shell's
            # decode), an applied one when the engine steps, so one batch interleaves.
            "history": sorted(
                self.config_history, key=lambda h: (h.get("partition", -1), h.get("offset", -1))
            ),
        }

    def _config_for(self, overrides: dict[str, Any]) -> RiskConfig | None:
        if not overrides:
            return None
        key = tuple(sorted(overrides.items()))
        cfg = self._config_cache.get(key)
        if cfg is None:
            cfg = self.config.risk.merged(overrides)
            if len(self._config_cache) > 10_000:
                self._config_cache.clear()
            self._config_cache[key] = cfg
        return cfg


def _scope_order(scope: str) -> tuple[int, str]:
    if scope == SCOPE_GLOBAL:
        return (0, "")
    return (1 if scope.startswith(SCOPE_ASSET) else 2, scope)
