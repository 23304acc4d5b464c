"""`GET /positions`, a page (docs/design.md D14): `asset` (case-insensitive), `action`,
`min_score`, `max_score`, `limit` (default 100, at most 1000) and `cursor` (the previous
page's `next_cursor`); rows in position-id order. No read holds the event loop for more than
a few milliseconds, whatever the table's size: the page is read from the state in chunks
(at most `CHUNK_ROWS` rows and `CHUNK_SCAN` candidates each, the loop free in between) and
a request examines at most `SCAN_BUDGET` candidates: a sparse filter answers a partial page
(`partial: true`, fewer rows than `limit`, possibly none) with a `next_cursor` to go on
from, like a DynamoDB scan page. The end is `next_cursor: null`, never an empty page.

    positions_handler(state, metrics)    # the route's handler (stream_risk.sidecar.app)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Final

import orjson
from aiohttp import web

from stream_risk.api import InvalidInput
from stream_risk.engine.views import MAX_LIMIT, PositionQuery
from stream_risk.metrics import Metrics
from stream_risk.rules import ACTIONS
from stream_risk.sidecar.errors import JSON, Handler, Rejected, bad_field, internal_error
from stream_risk.sidecar.exposure import Exposure, exposure_from_view, state_exposure
from stream_risk.state import SidecarState

log = logging.getLogger("stream_risk.sidecar")

#: `GET /positions`: rows a page has unless `limit` says otherwise.
DEFAULT_LIMIT: Final = 100
#: Candidates one request examines at most (a sparse filter ends its page early).
SCAN_BUDGET: Final = 20_000
#: Rows and candidates read from the state in one go, between which the loop is free.
CHUNK_ROWS: Final = 50
CHUNK_SCAN: Final = 1_000
POSITIONS_PARAMS: Final = ("asset", "action", "min_score", "max_score", "limit", "cursor")


def encode_cursor(after: str) -> str:
    """An opaque cursor: the position id the next page starts after."""
    return base64.urlsafe_b64encode(orjson.dumps({"after": after})).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The position id in a cursor; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        after = orjson.loads(raw)["after"]
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise ValueError(str(exc)) from exc
    if not isinstance(after, str):
        raise ValueError("not a cursor")
    return after


def parse_positions_query(params: Mapping[str, str]) -> tuple[PositionQuery, int]:
    """`GET /positions`'s query string: the first chunk's `PositionQuery` and the page's
    limit. Raises InvalidInput naming every bad parameter."""
    errors = []
    for name in params:
        if name not in POSITIONS_PARAMS:
            errors.append(
                bad_field(
                    name,
                    f"unknown parameter; /positions takes {', '.join(POSITIONS_PARAMS)}",
                    "unknown",
                )
            )
    asset = (params.get("asset") or "").strip() or None
    if asset is not None and len(asset) > 64:
        errors.append(bad_field("asset", "an asset name is at most 64 characters"))
    action = (params.get("action") or "").strip().upper() or None
    if action is not None and action not in ACTIONS:
        errors.append(bad_field("action", f"unknown action; one of {', '.join(ACTIONS)}"))
    scores: dict[str, float | None] = {}
    for name in ("min_score", "max_score"):
        raw = params.get(name)
        scores[name] = None
        if raw is None or raw == "":
            continue
        try:
            v = float(raw)
        except ValueError:
            v = math.nan
        if not math.isfinite(v):
            errors.append(bad_field(name, f"a number of points, 0 to 100 (got {raw!r})", "number"))
        else:
            scores[name] = v
    lo, hi = scores["min_score"], scores["max_score"]
    if lo is not None and hi is not None and lo > hi:
        errors.append(bad_field("min_score", f"min_score {lo:g} is above max_score {hi:g}"))
    limit = DEFAULT_LIMIT
    raw_limit = params.get("limit")
    if raw_limit not in (None, ""):
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            errors.append(
                bad_field("limit", f"an integer from 1 to {MAX_LIMIT} (got {raw_limit!r})", "range")
            )
    after = None
    cursor = params.get("cursor")
    if cursor:
        try:
            after = decode_cursor(cursor)
        except ValueError:
            errors.append(
                bad_field(
                    "cursor",
                    "not a cursor of this server: pass the previous page's next_cursor as "
                    "it is, or none for the first page",
                )
            )
    if errors:
        raise InvalidInput(errors)
    return PositionQuery(
        asset=asset,
        action=action,
        min_score=lo,
        max_score=hi,
        after=after,
        limit=min(limit, CHUNK_ROWS),
        budget=CHUNK_SCAN,
    ), limit


def held_assets(state: SidecarState) -> list[str]:
    """The assets of this instance's table: O(assets) over an engine's table, O(table) over
    a state without one (a test double)."""
    engine = getattr(state, "engine", None)
    table = getattr(engine, "table", None)
    by_asset = getattr(table, "by_asset", None)
    if isinstance(by_asset, Mapping):
        return sorted(str(a) for a, pids in by_asset.items() if pids)
    return sorted({str(r.get("asset")) for r in state.positions(None)})


def no_asset_note(state: SidecarState, asset: str) -> str:
    """Why `GET /positions?asset=` found nothing: what this instance holds instead."""
    if state.mode == "stateless":
        return "this is a stateless sidecar (stream-risk serve): it has no positions table"
    here = held_assets(state)
    held = f"assets here: {', '.join(here)}" if here else "this instance's table is empty"
    return (
        f"no position of asset {asset.upper()} in this instance's table (the name is "
        f"case-insensitive); {held}. Another instance of the consumer group may hold it: "
        "GET /book shows the whole book"
    )


def positions_handler(state: SidecarState, m: Metrics) -> Handler:
    """`GET /positions`: streamed chunk by chunk, timed and counted like the other routes
    (not by `observed`: an error after the status went out cuts the connection)."""
    perf = time.perf_counter

    async def positions(request: web.Request) -> web.StreamResponse:
        t0 = perf()
        resp: web.StreamResponse | None = None
        try:
            q, limit = parse_positions_query(request.query)
            if request.method == "HEAD":  # no body to stream (it would corrupt the reply)
                resp = web.Response(content_type=JSON)
                m.observe_http("/positions", request.method, 200, perf() - t0)
                return resp
            # The exposure of the page's assets (and the filter's), made chunk by chunk
            # beside the rows: bounded by the page, not the book. None: the state has no
            # per-asset sums (then from its whole view, once, at the end).
            exposure: Exposure | None = {}
            n = scanned = 0
            after = q.after
            while True:
                page = state.positions_page(q)
                if resp is None:
                    # Streamed chunk by chunk (the socket takes each as it is made): the
                    # status is sent once the first chunk was read without error.
                    resp = web.StreamResponse(headers={"Content-Type": JSON})
                    await resp.prepare(request)
                    await resp.write(b'{"positions":[')
                if page.rows:
                    data = orjson.dumps(page.rows, option=orjson.OPT_NON_STR_KEYS)[1:-1]
                    await resp.write(b"," + data if n else data)
                    if exposure is not None:
                        new = {str(r.get("asset")) for r in page.rows} - exposure.keys()
                        some = state.asset_exposure(new) if new else {}
                        if some is None:
                            exposure = None
                        else:
                            exposure.update(exposure_from_view({"assets": some}))
                n += len(page.rows)
                scanned += page.scanned
                after = page.next_after
                left = SCAN_BUDGET - scanned
                if after is None or n >= limit or left <= 0:
                    break
                q = replace(
                    q, after=after, limit=min(CHUNK_ROWS, limit - n), budget=min(CHUNK_SCAN, left)
                )
                await asyncio.sleep(0)  # the loop is free between chunks
            await asyncio.sleep(0)  # and before the end of the body
            if q.asset is not None:  # the filter's asset even on an empty page
                spellings = {q.asset, q.asset.upper(), q.asset.lower()}
                exposure = state_exposure(state, q.asset, spellings | (exposure or {}).keys())
            elif exposure is None:
                exposure = state_exposure(state, None, None)
            meta = {
                "mode": state.mode,
                "count": n,
                "next_cursor": None if after is None else encode_cursor(after),
                "partial": after is not None and n < limit,
                "scanned": scanned,
                "limit": limit,
                "filter": {
                    "asset": q.asset,
                    "action": q.action,
                    "min_score": q.min_score,
                    "max_score": q.max_score,
                },
                "total": state.count(q.asset),
                "exposure": exposure,
            }
            if q.asset is not None and n == 0 and meta["total"] == 0:
                meta["note"] = no_asset_note(state, q.asset)
            await resp.write(b"]," + orjson.dumps(meta, option=orjson.OPT_NON_STR_KEYS)[1:])
            await resp.write_eof()
        except InvalidInput as exc:
            resp = Rejected.invalid(exc, "validation").response()
            m.http_error("/positions", "validation")
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away
        except Exception:
            log.exception("GET /positions failed")
            m.http_error("/positions", "internal")
            if resp is not None:  # part of the body is sent: cut it, the client sees it
                resp.force_close()
                raise
            resp = internal_error()
        m.observe_http("/positions", request.method, resp.status, perf() - t0)
        return resp

    return positions
