// stream-risk dashboard: live positions, exposure and actions over Server-Sent Events.
// No framework, no CDN. Every string that came from Kafka is escaped before it is rendered.
// The table is read a page at a time from GET /positions (position-id order, 200 rows, next
// / previous, filters by asset and action; the URL's ?limit=&asset=&action= set them):
// never the whole book, whatever its size. The page is refreshed every second and at once
// when the event stream says a row on it changed.
(function () {
  "use strict";

  // The actions, safest first: replaced by the server's (stream_risk.rules) on each snapshot.
  var ACTIONS = ["HOLD", "REDUCE", "HEDGE_PARTIAL", "HEDGE_FULL", "LIQUIDATE"];
  var FEED_MAX = 120;
  var PAGE_REFRESH_MS = 1000;
  // A sparse filter's page may come back partial (the server examines a bounded number of
  // positions per request): follow its cursor this many more times to fill the page.
  var FILL_REQUESTS = 5;
  var params = new URLSearchParams(window.location.search);

  var state = {
    rows: new Map(),      // position_id -> row (as GET /positions): the current page
    exposure: {},
    status: {},
    feed: [],             // newest first
    sortKey: "position_id", // within the page (pages are in position-id order)
    sortDir: 1,
    asset: params.get("asset") || null,   // filters (server side)
    action: (params.get("action") || "").toUpperCase() || null,
    page: {
      limit: Math.max(1, Math.min(1000, parseInt(params.get("limit"), 10) || 200)),
      cursor: null,       // where this page starts (null: the first)
      back: [],           // the cursors of the pages before it
      next: null,         // the next page's cursor (null: this is the last)
      number: 1,
      total: null,        // positions on the asset filter (before the action filter)
      partial: false,
      loading: false,
      again: false,
      loaded: 0,
    },
    conn: "connecting",   // the event stream: connecting | live | reconnecting | unsupported
    flash: new Set(),     // position ids updated since the last render
    serverSkew: 0,        // server clock - local clock, ms
    updates: 0,
    actions: 0,
    lastUpdate: null,
  };

  // ---------------------------------------------------------------- formatting
  function esc(s) {
    return String(s === null || s === undefined ? "" : s)
      .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }
  function num(x) { return typeof x === "number" && isFinite(x); }
  function usd(x, signed) {
    if (!num(x)) return "–";
    var a = Math.abs(x), s = x < 0 ? "−" : (signed && x > 0 ? "+" : "");
    var v;
    if (a >= 1e9) v = (a / 1e9).toFixed(2) + "B";
    else if (a >= 1e6) v = (a / 1e6).toFixed(2) + "M";
    else if (a >= 1e4) v = (a / 1e3).toFixed(1) + "k";
    else if (a >= 100) v = a.toFixed(0);
    else v = a.toFixed(2);
    return s + "$" + v;
  }
  function qty(x) {
    if (!num(x)) return "–";
    var a = Math.abs(x);
    var d = a >= 1000 ? 0 : a >= 10 ? 2 : a >= 1 ? 3 : 4;
    return (x < 0 ? "−" : "") + a.toLocaleString("en-US", { maximumFractionDigits: d });
  }
  function pts(x) { return num(x) ? x.toFixed(1) : "–"; }
  function price(x) {
    if (!num(x)) return "–";
    var d = x >= 1000 ? 1 : x >= 1 ? 3 : 5;
    return x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  }
  function signClass(x) { return num(x) ? (x > 0 ? "pos" : x < 0 ? "neg" : "") : ""; }
  function now() { return Date.now() + state.serverSkew; }
  function dur(ms) {
    var s = Math.round(Math.abs(ms) / 1000);
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    var h = Math.floor(m / 60);
    return h + "h " + String(m % 60).padStart(2, "0") + "m";
  }
  function clock(ms) {
    var d = new Date(ms);
    return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }
  function badge(action) {
    var a = ACTIONS.indexOf(action) >= 0 ? action : (action || "WAITING");
    return '<span class="badge a-' + esc(a) + '">' + esc(String(a).replace("_", " ")) + "</span>";
  }
  function actionOf(row) { return row.latest_action || null; }

  // ---------------------------------------------------------------- sort keys
  function sortValue(row, key) {
    var a = actionOf(row) || {};
    var b = a.risk_breakdown || {};
    var p = a.pnl_scenarios || {};
    var h = a.suggested_hedge || {};
    switch (key) {
      case "position_id": return row.position_id;
      case "asset": return row.asset;
      case "size": return row.size;
      case "entry": return row.entry_price || 0;
      case "mark": return num(row.mark_price) ? row.mark_price : -Infinity;
      case "upnl": return num(row.unrealized_pnl) ? row.unrealized_pnl : -Infinity;
      case "notional": return a.position_notional_usd || 0;
      case "action": return ACTIONS.indexOf(a.action);
      case "score": return num(a.risk_score) ? a.risk_score : -1;
      case "hedge": return a.hedge_pct || 0;
      case "cost": return h.total_cost_usd || 0;
      case "pnl_d5": return p.move_down_5pct || 0;
      case "pnl_u5": return p.move_up_5pct || 0;
      case "stale": return a.stale_market_data ? 1 : 0;
      case "next": return row.next_evaluation_ts || Infinity;
    }
    return 0;
  }

  // ---------------------------------------------------------------- rendering
  var renderPending = false;
  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    setTimeout(function () { renderPending = false; render(); }, 40);
  }

  function render() {
    renderStatus();
    renderExposure();
    renderDesk();
    renderRows();
    renderFeed();
    document.body.dataset.updates = String(state.updates);
    document.body.dataset.actions = String(state.actions);
    document.body.dataset.rows = String(state.rows.size);
  }

  // One status element, one state at a time: what the page knows now. While the stream is
  // down the engine's readiness is not known, so it is not shown ("reconnecting…" alone).
  var STATUS = {
    connecting: ["pill-wait", "connecting…", "opening the server push (SSE) stream /events"],
    reconnecting: ["pill-wait", "reconnecting…", "the event stream dropped; the browser retries every 2 s"],
    unsupported: ["pill-bad", "no live updates", "this browser has no EventSource: reload in another"],
    live: ["pill-ok", "live", "connected to /events"],
    ready: ["pill-ok", "live · engine ready", "connected to /events; GET /readyz: 200"],
    "not-ready": ["pill-bad", "live · engine not ready", ""],
  };
  function statusState() {
    var st = state.status || {};
    if (state.conn !== "live") return state.conn;
    return st.ready === true ? "ready" : st.ready === false ? "not-ready" : "live";
  }
  function renderStatus() {
    var st = state.status || {};
    var el = document.getElementById("status"), key = statusState(), s = STATUS[key];
    el.className = "pill " + s[0];
    el.textContent = s[1];
    el.title = key === "not-ready" ? "GET /readyz: 503\n" + (st.reasons || []).join("\n") : s[2];
    el.dataset.state = key;
    var n = num(st.positions) ? st.positions : state.rows.size;
    document.getElementById("count").textContent = n.toLocaleString("en-US") + (n === 1 ? " position" : " positions");
    if (state.lastUpdate) document.getElementById("clock").textContent = clock(state.lastUpdate);
  }

  function pnlCells(label, e, move) {
    var u = e["pnl_" + move], h = e["hedged_pnl_" + move];
    return "<span>" + label + '</span><b class="' + signClass(u) + '">' + usd(u, true) +
      '</b><b class="' + signClass(h) + '">' + usd(h, true) + "</b>";
  }

  var INSTRUMENTS = { spot_sell: "spot sell", spot_buy: "spot buy", perp_short: "perp short", perp_long: "perp long" };

  // The whole book's advice for an asset's net position and what following it saves against
  // hedging each position alone (the book stage, docs/design.md D17): only in "book" scope.
  function netAdvice(name, e) {
    if (!("net_advice" in e) && !("saving_usd" in e)) return "";
    var a = e.net_advice, out = '<div class="xadvice" title="advice for the net position of ' +
      esc(name) + ' across the whole book">';
    if (!a) {
      out += '<span class="muted">net advice: waiting for a price</span>';
    } else {
      var h = a.suggested_hedge;
      out += '<div class="xline"><span class="muted">net</span>' + badge(a.action) +
        '<span class="muted" title="the net position\'s risk score">' + pts(a.risk_score) + "</span></div>";
      out += h
        ? '<div class="xhedge">hedge ' + qty(h.size) + " " + esc(name) + " · " +
          esc(INSTRUMENTS[h.instrument] || h.instrument) + "</div>"
        : '<div class="muted">no hedge</div>';
    }
    if (num(e.saving_usd)) out += savingHtml(e.saving_usd);
    return out + "</div>";
  }

  function savingHtml(saving) {
    return '<div class="xsave" title="spread and funding saved by hedging the net position ' +
      'instead of each position on its own">saves <b class="' + signClass(saving) + '">' +
      usd(saving) + "</b> vs hedging each alone</div>";
  }

  // The limit of a card's scope ("asset:BTC", "book") and its breaches (GET /exposure's).
  var LIMIT_NAMES = { max_net_notional_usd: "net", max_gross_notional_usd: "gross" };
  function limitOf(scope) {
    var d = state.desk || {}, l = (d.limits || {})[scope] || {};
    var breaches = (d.breaches || []).filter(function (b) { return b.scope === scope; });
    // The net limit first (what the desk watches), else the gross.
    var key = num(l.max_net_notional_usd) ? "max_net_notional_usd"
      : num(l.max_gross_notional_usd) ? "max_gross_notional_usd" : null;
    return { key: key, limit: key ? l[key] : null, breaches: breaches };
  }

  // |net| (or gross) notional against its limit: the bar is filled to the value, the line
  // marks the limit; past it the fill is red. The scale leaves room on both sides.
  function limitBar(e, lim) {
    if (!lim.key) return "";
    var value = lim.key === "max_net_notional_usd" ? Math.abs(e.net_notional_usd || 0) : (e.gross_notional_usd || 0);
    var scale = Math.max(value, lim.limit) * 1.25 || 1;
    var over = value > lim.limit;
    var what = LIMIT_NAMES[lim.key];
    return '<div class="xlimit' + (over ? " over" : "") + '" title="' + what + " notional " + usd(value) +
      " against its limit " + usd(lim.limit) + ' (the line)"><span class="fill" style="width:' +
      (value / scale * 100).toFixed(1) + '%"></span><span class="mark" style="left:' +
      (lim.limit / scale * 100).toFixed(1) + '%"></span></div>' +
      '<div class="xlimit-text small"><span class="muted">' + what + " ≤ " + usd(lim.limit) + "</span>" +
      (over ? '<span class="breach-tag">LIMIT BREACHED</span>' : '<span class="muted">within</span>') + "</div>";
  }

  function card(name, e, cls, title) {
    var gross = e.gross_notional_usd || 0;
    var longShare = gross > 0 ? (e.long_notional_usd || 0) / gross * 100 : 50;
    var isBook = cls.indexOf("book") >= 0;
    var lim = limitOf(isBook ? "book" : "asset:" + name);
    if (lim.breaches.length) cls += " breached";
    var extra = isBook
      ? (num(e.saving_usd) ? '<div class="xadvice">' + savingHtml(e.saving_usd) + "</div>" : "")
      : netAdvice(name, e);
    return '<div class="xcard ' + cls + '" data-asset="' + esc(name) + '"' +
      (lim.breaches.length ? ' data-breached="1"' : "") + ">" +
      '<div class="xhead"><span class="xasset">' + esc(title || name) + '</span><span class="muted small">' +
      e.positions + " pos" + (num(e.long) && num(e.short) ? " · " + e.long + "L/" + e.short + "S" : "") +
      "</span></div>" +
      '<div class="xnet ' + signClass(e.net_notional_usd) + '" title="net notional (long − short)">' +
      usd(e.net_notional_usd, true) + '<span class="xgross">gross ' + usd(gross) + "</span></div>" +
      '<div class="xbar" title="long (green) vs short (red) share of the gross notional"><span style="width:' + longShare.toFixed(1) + '%"></span></div>' +
      limitBar(e, lim) +
      '<div class="xpnl" title="P&amp;L if the price moves, as held and with every advised hedge placed">' +
      "<span></span><span>as held</span><span>hedged</span>" +
      pnlCells("−5%", e, "down_5pct") + pnlCells("+5%", e, "up_5pct") + "</div>" + extra + "</div>";
  }

  // Whose positions the cards sum: the whole book (the book stage runs) or this instance's.
  function renderScope() {
    var el = document.getElementById("exposure-scope");
    var d = state.desk || {};
    var whole = d.scope === "book";
    var p = d.partitions;
    el.className = "scope " + (whole ? "scope-book" : "scope-instance");
    el.dataset.scope = whole ? "book" : "instance";
    el.textContent = whole ? "whole book" : "this instance only" +
      (p && num(p.assigned) && num(p.total) ? ": " + p.assigned + " of the book's " + p.total +
        " positions partitions" : "");
    el.title = whole
      ? "every instance's positions, from the risk-book topic (the book stage)"
      : "only the positions partitions this instance holds: the book stage is off " +
        "(create the topics risk-book-partials and risk-book, e.g. stream-risk topics create)";
    return whole;
  }

  function renderExposure() {
    var whole = renderScope();
    var el = document.getElementById("exposure");
    var names = Object.keys(state.exposure || {}).sort(function (a, b) {
      return Math.abs(state.exposure[b].gross_notional_usd || 0) - Math.abs(state.exposure[a].gross_notional_usd || 0);
    });
    if (!names.length) {
      el.innerHTML = '<div class="empty">no positions with market data yet</div>';
      return;
    }
    var book = { positions: 0 };
    var counted = names.every(function (n) { return num(state.exposure[n].long); });
    if (counted) { book.long = 0; book.short = 0; }
    var keys = ["net_notional_usd", "gross_notional_usd", "long_notional_usd", "short_notional_usd",
      "pnl_down_5pct", "pnl_up_5pct", "hedged_pnl_down_5pct", "hedged_pnl_up_5pct"];
    keys.forEach(function (k) { book[k] = 0; });
    var html = names.map(function (n) {
      var e = state.exposure[n];
      book.positions += e.positions;
      if (counted) { book.long += e.long; book.short += e.short; }
      keys.forEach(function (k) { book[k] += e[k] || 0; });
      return card(n, e, state.asset === n ? "selected" : "");
    });
    // A state that gives no hedged P&L (none of its assets has it): "–" rather than $0.
    if (!names.some(function (m) { return num(state.exposure[m].hedged_pnl_up_5pct); })) {
      book.hedged_pnl_down_5pct = null; book.hedged_pnl_up_5pct = null;
    }
    if (whole && state.desk.book && num(state.desk.book.saving_usd)) book.saving_usd = state.desk.book.saving_usd;
    // The book's own figures when the engine gives them (GET /exposure's `book`: its
    // hedged P&L is Σ size × price × m × (1 − h) over every position), not the page's sums.
    var b = (state.desk || {}).book;
    if (b) ["pnl_down_5pct", "pnl_up_5pct", "hedged_pnl_down_5pct", "hedged_pnl_up_5pct",
      "net_notional_usd", "gross_notional_usd"].forEach(function (k) { if (num(b[k])) book[k] = b[k]; });
    html.unshift(card("Book", book, "book", whole ? "Whole book" : "This instance"));
    el.innerHTML = html.join("");
    var atTick = names.every(function (n) { return state.exposure[n].priced_by !== "last_action"; });
    document.getElementById("exposure-note").textContent =
      (atTick ? "notional at the latest tick" : "notional at each position's latest assessment") +
      "; P&L if each asset moves ±5% · click an asset to filter the table";
  }

  // The desk's controls in words: the limits in force, what breaks them, the active alerts.
  function scopeName(scope) { return String(scope).indexOf("asset:") === 0 ? scope.slice(6) : scope; }
  function limitLabel(b) {
    return (LIMIT_NAMES[b.limit] || b.limit) + " notional limit " + scopeName(b.scope);
  }
  function alertLabel(a) {
    var d = a.details || {};
    if (a.kind === "exposure_limit" && d.scope) return limitLabel(d);
    if (a.kind === "stale_market_data") return "stale market data " + (d.asset || "");
    if (a.kind === "liquidate") return "LIQUIDATE " + (d.position_id || "");
    if (a.kind === "dlq_rate") return "dead letters: " + d.dlq_last_minute + " in a minute";
    return a.key;
  }
  function renderDesk() {
    var el = document.getElementById("desk");
    var d = state.desk;
    if (!el || !d) return;
    var parts = [];
    var scopes = Object.keys(d.limits || {});
    if (scopes.length) {
      parts.push("Limits: " + scopes.map(function (s) {
        var l = d.limits[s], out = [];
        if (l.max_net_notional_usd != null) out.push("net ≤ " + usd(l.max_net_notional_usd));
        if (l.max_gross_notional_usd != null) out.push("gross ≤ " + usd(l.max_gross_notional_usd));
        return esc(scopeName(s)) + " " + out.join(", ");
      }).join(" · "));
    } else {
      parts.push("No notional limits set (risk-config)");
    }
    (d.breaches || []).forEach(function (b) {
      parts.push('<span class="badge a-HEDGE_FULL">BREACH</span> ' + esc(limitLabel(b)) + ": " +
        usd(b.value_usd) + " > " + usd(b.limit_usd));
    });
    var alerts = d.alerts_active || [];
    parts.push(alerts.length ? alerts.length + " active alert" + (alerts.length === 1 ? "" : "s") + ": " +
      alerts.map(function (a) { return esc(alertLabel(a)); }).join(", ") : "no active alerts");
    el.innerHTML = parts.join(" · ");
    // The latest alerts as lines: "21:03:04 FIRED net notional limit BTC: $6.1M > $5.0M".
    document.getElementById("alerts").innerHTML = (d.alerts_recent || []).slice().reverse()
      .map(function (a) {
        var fired = a.state === "fired", det = a.details || {};
        var what = alertLabel(a);
        if (a.kind === "exposure_limit" && fired && num(det.value_usd)) {
          what += ": " + usd(det.value_usd) + " > " + usd(det.limit_usd);
        }
        return '<li class="' + (fired ? "fired" : "cleared") + '"><span class="t">' +
          (num(a.ts) ? clock(a.ts).slice(0, 8) : "") + "</span> <b>" + (fired ? "FIRED" : "CLEARED") +
          "</b> " + esc(what) + "</li>";
      }).join("");
  }

  function pnlCell(p, move, hedged) {
    var u = p["move_" + move], h = p["hedged_" + move];
    var sub = hedged ? '<span class="sub ' + signClass(h) + '">' + usd(h, true) + "</span>" : "";
    return '<td class="num ' + signClass(u) + '">' + usd(u, true) + sub + "</td>";
  }

  function rowHtml(row) {
    var a = actionOf(row);
    var pid = esc(row.position_id);
    var cls = state.flash.has(row.position_id) ? "flash" : "";
    var size = '<td class="num ' + signClass(row.size) + '">' + qty(row.size) + "</td>" +
      '<td class="num">' + price(row.entry_price) + "</td>" +
      '<td class="num">' + price(row.mark_price) + "</td>";
    var upnl = '<td class="num ' + signClass(row.unrealized_pnl) + '">' + usd(row.unrealized_pnl, true) + "</td>";
    if (!a) {
      // What it waits for, and why (e.g. "volatility_1d: estimating from prices: 5 of 20
      // returns so far"), as the engine's /positions row says.
      var w = row.waiting || {};
      var waiting = (row.waiting_for || []).map(function (f) {
        return w[f] ? f + " (" + w[f] + ")" : f;
      }).join("; ");
      return '<tr data-position-id="' + pid + '" class="waiting ' + cls + '"><td class="pid">' + pid +
        '<span class="sub">' + esc(row.asset) + "</span></td>" + size + '<td class="num">–</td>' + upnl + "<td>" + badge("WAITING") +
        '</td><td colspan="7" class="waiting-for">waiting for market data' + (waiting ? ": " + esc(waiting) : "") + "</td></tr>";
    }
    var b = a.risk_breakdown || {};
    var p = a.pnl_scenarios || {};
    var h = a.suggested_hedge;
    var total = 100;
    var parts = "loss " + pts(b.loss_severity) + " / 30 · age " + pts(b.position_age) + " / 20 · vol " +
      pts(b.volatility_regime) + " / 25 · liquidity " + pts(b.size_vs_liquidity) + " / 15";
    var stack = '<span class="stack" title="' + parts + '">' +
      '<span class="s-loss" style="width:' + ((b.loss_severity || 0) / total * 100).toFixed(1) + '%"></span>' +
      '<span class="s-age" style="width:' + ((b.position_age || 0) / total * 100).toFixed(1) + '%"></span>' +
      '<span class="s-vol" style="width:' + ((b.volatility_regime || 0) / total * 100).toFixed(1) + '%"></span>' +
      '<span class="s-liq" style="width:' + ((b.size_vs_liquidity || 0) / total * 100).toFixed(1) + '%"></span></span>';
    var hedged = (a.hedge_pct || 0) > 0;
    var hedgeCell = h
      ? "<td>" + esc(h.instrument) + '<span class="sub">' + qty(h.size) + " · " + Math.round((a.hedge_pct || 0) * 100) + "%</span></td>" +
        '<td class="num">' + usd(h.total_cost_usd) + '<span class="sub">' + (num(h.total_cost_bps) ? h.total_cost_bps.toFixed(1) : "–") + " bps</span></td>"
      : '<td class="muted">' + (a.reason_code === "HEDGE_TOO_EXPENSIVE" ? "too expensive" : "none") + '</td><td class="num muted">–</td>';
    var stale = a.stale_market_data ? '<span class="stale" title="the tick was older than max_tick_age">STALE</span>' : '<span class="fresh">fresh</span>';
    var est = a.estimated_inputs || [];
    if (est.length) {
      // The feed did not give these: vol estimated from prices, the rest at defaults.
      stale += '<span class="sub estimated" title="not from the feed: ' + esc(est.join(", ")) + '">' +
        (est.indexOf("volatility_1d") >= 0 ? "vol est." : "defaults") + "</span>";
    }
    var due = row.next_evaluation_ts;
    var reasoning = esc(a.reasoning || "");
    return '<tr data-position-id="' + pid + '" data-action="' + esc(a.action) + '" class="' + cls + '" title="' + reasoning + '">' +
      '<td class="pid">' + pid + '<span class="sub">' + esc(row.asset) + "</span></td>" + size +
      '<td class="num">' + usd(a.position_notional_usd) + "</td>" + upnl +
      "<td>" + badge(a.action) + '<span class="sub">' + esc(a.trigger || "") + "</span></td>" +
      '<td class="num" title="' + parts + '"><span class="score">' + stack + "<b>" + pts(a.risk_score) + "</b></span></td>" +
      hedgeCell +
      pnlCell(p, "down_5pct", hedged) + pnlCell(p, "up_5pct", hedged) +
      "<td>" + stale + "</td>" +
      '<td class="num" data-due="' + (num(due) ? due : "") + '" title="every ' + esc(a.re_evaluate_minutes) + ' min">' + dueText(due) +
      '<span class="sub" data-at="' + (a.assessed_at || "") + '">' + agoText(a.assessed_at) + "</span></td></tr>";
  }

  function dueText(due) {
    if (!num(due)) return "–";
    var d = due - now();
    return d <= 0 ? "due" : "in " + dur(d);
  }
  function agoText(at) { return num(at) ? dur(now() - at) + " ago" : "–"; }

  function renderRows() {
    var tbody = document.getElementById("rows");
    var rows = Array.from(state.rows.values());
    var only = [state.asset, state.action && state.action.replace("_", " ")].filter(Boolean).join(", ");
    document.getElementById("filter-note").textContent = only
      ? "· " + only + " only" + (state.asset ? " (click the card again to show all)" : "") : "";
    var k = state.sortKey, dir = state.sortDir;
    rows.sort(function (x, y) {
      var a = sortValue(x, k), b = sortValue(y, k);
      if (a < b) return -dir;
      if (a > b) return dir;
      return String(x.position_id) < String(y.position_id) ? -1 : 1;
    });
    var empty = state.status && state.status.mode === "stateless"
      ? "stateless sidecar (stream-risk serve): no positions table here; run stream-risk run or stream-risk demo"
      : state.page.partial ? "none on this stretch of the book: next › looks further"
      : (state.asset || state.action) ? "no position matches" : "no open positions";
    tbody.innerHTML = rows.length
      ? rows.map(rowHtml).join("")
      : '<tr class="empty-row"><td colspan="14">' + esc(empty) + "</td></tr>";
    state.flash.clear();
    renderPager();
    document.querySelectorAll("th[data-sort]").forEach(function (th) {
      th.classList.toggle("sorted-desc", th.dataset.sort === k && dir < 0);
      th.classList.toggle("sorted-asc", th.dataset.sort === k && dir > 0);
    });
  }

  function renderPager() {
    var pg = state.page, n = state.rows.size;
    var first = (pg.number - 1) * pg.limit;
    // With an action filter, pages may be partial (the server's scan budget): no offsets.
    var text = !n ? "no rows" : state.action ? n + (n === 1 ? " row" : " rows")
      : "rows " + (first + 1).toLocaleString("en-US") + "–" + (first + n).toLocaleString("en-US");
    if (num(pg.total) && !state.action) text += " of " + pg.total.toLocaleString("en-US");
    text += " · page " + pg.number;
    document.getElementById("page-info").textContent = text;
    document.getElementById("prev").disabled = pg.back.length === 0;
    document.getElementById("next").disabled = !pg.next;
    document.getElementById("action-filter").value = state.action || "";
    document.body.dataset.page = String(pg.number);
    document.body.dataset.pageLoads = String(pg.loaded);
  }

  // ---------------------------------------------------------------- the page of rows
  function pageUrl(cursor, limit) {
    var q = ["limit=" + limit];
    if (state.asset) q.push("asset=" + encodeURIComponent(state.asset));
    if (state.action) q.push("action=" + encodeURIComponent(state.action));
    if (cursor) q.push("cursor=" + encodeURIComponent(cursor));
    return "/positions?" + q.join("&");
  }

  function loadPage() {
    var pg = state.page;
    if (pg.loading) { pg.again = true; return; }
    pg.loading = true;
    var start = pg.cursor, key = pageUrl(start, pg.limit), rows = [], requests = 0;
    function done() {
      pg.loading = false;
      if (pg.again) { pg.again = false; loadPage(); }
    }
    function step(cursor) {
      requests += 1;
      fetch(pageUrl(cursor, pg.limit - rows.length), { cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status)); })
        .then(function (d) {
          if (key !== pageUrl(pg.cursor, pg.limit)) { pg.again = true; done(); return; } // moved on
          rows = rows.concat(d.positions || []);
          if (d.partial && d.next_cursor && rows.length < pg.limit && requests < FILL_REQUESTS) {
            step(d.next_cursor);
            return;
          }
          var fresh = new Map();
          rows.forEach(function (r) {
            var old = state.rows.get(r.position_id), a = actionOf(r);
            if (old && a && (actionOf(old) || {}).assessed_at !== a.assessed_at) state.flash.add(r.position_id);
            fresh.set(r.position_id, r);
          });
          state.rows = fresh;
          pg.next = d.next_cursor || null;
          pg.total = num(d.total) ? d.total : null;
          pg.partial = !!d.partial && rows.length === 0;
          pg.loaded += 1;
          scheduleRender();
          done();
        })
        .catch(function () { done(); }); // the sidecar went away: the next refresh retries
    }
    step(start);
  }

  function goTo(cursor, back, number) {
    state.page.cursor = cursor;
    state.page.back = back;
    state.page.number = number;
    state.rows = new Map();
    loadPage();
  }
  function firstPage() { goTo(null, [], 1); }

  function feedHtml(ev, fresh) {
    var t = clock(ev.assessed_at || now());
    var who = esc(ev.position_id);
    if (ev.closed) {
      return '<li class="feed-item ' + (fresh ? "new" : "") + '" data-position-id="' + who + '"><span class="t">' + t.slice(0, 8) +
        '</span><span class="who">' + who + '</span><span class="badge a-CLOSED">CLOSED</span>' +
        '<span class="what">position closed' + (ev.prev_action ? " (was " + esc(ev.prev_action) + ")" : "") + "</span></li>";
    }
    var change = ev.prev_action && ev.prev_action !== ev.action ? esc(ev.prev_action) + " → " + esc(ev.action) : "";
    var delta = num(ev.prev_score) && num(ev.risk_score) ? ev.risk_score - ev.prev_score : null;
    var what = [
      'score <span class="sc">' + pts(ev.risk_score) + "</span>" +
        (delta !== null ? ' <span class="' + signClass(-delta) + '">(' + (delta >= 0 ? "+" : "−") + Math.abs(delta).toFixed(1) + ")</span>" : ""),
      change,
      ev.instrument ? esc(ev.instrument) + " " + qty(ev.hedge_size) + (num(ev.hedge_cost_bps) ? " @ " + ev.hedge_cost_bps.toFixed(1) + " bps" : "") : "",
      ev.stale_market_data ? '<span class="stale">STALE</span>' : "",
      '<span class="trig">' + esc(ev.trigger || "") + "</span>",
    ].filter(Boolean).join(" · ");
    return '<li class="feed-item ' + (fresh ? "new" : "") + '" data-position-id="' + who + '" data-action="' + esc(ev.action) +
      '"><span class="t">' + t.slice(0, 8) + '</span><span class="who">' + who + "</span>" + badge(ev.action) +
      '<span class="what">' + what + "</span></li>";
  }

  function renderFeed() {
    var el = document.getElementById("feed");
    el.innerHTML = state.feed.map(function (ev) { return feedHtml(ev, ev._fresh); }).join("");
    state.feed.forEach(function (ev) { ev._fresh = false; });
    document.getElementById("feed-count").textContent = state.actions ? state.actions + " since this page opened" : "";
  }

  // ---------------------------------------------------------------- events
  function applyStatus(d) {
    if (d.status) state.status = d.status;
    if (num(d.server_ts)) state.serverSkew = d.server_ts - Date.now();
    state.lastUpdate = num(d.server_ts) ? d.server_ts : Date.now();
  }

  function onSnapshot(d) {
    if (d.actions && d.actions.length) ACTIONS = d.actions;
    state.exposure = d.exposure || {};
    state.desk = d.desk || null;
    state.feed = (d.recent || []).slice().reverse().slice(0, FEED_MAX);
    applyStatus(d);
    loadPage();
    scheduleRender();
  }

  function onUpdate(d) {
    // Rows of this page that changed are shown at once; a closed one reloads the page.
    (d.upserts || []).forEach(function (r) {
      if (state.rows.has(r.position_id)) { state.rows.set(r.position_id, r); state.flash.add(r.position_id); }
    });
    if ((d.removed || []).some(function (pid) { return state.rows.has(pid); })) loadPage();
    if (d.exposure) state.exposure = d.exposure;
    if (d.desk) state.desk = d.desk;
    applyStatus(d);
    state.updates += 1;
    scheduleRender();
  }

  function onAction(ev) {
    ev._fresh = true;
    state.feed.unshift(ev);
    if (state.feed.length > FEED_MAX) state.feed.length = FEED_MAX;
    state.actions += 1;
    scheduleRender();
  }

  function parse(handler) {
    return function (e) {
      try { handler(JSON.parse(e.data)); } catch (err) { console.error("bad event", err); }
    };
  }

  function connect() {
    if (!window.EventSource) {
      state.conn = "unsupported";
      renderStatus();
      return;
    }
    var es = new EventSource("/events");
    es.onopen = function () { state.conn = "live"; renderStatus(); };
    es.onerror = function () { state.conn = "reconnecting"; renderStatus(); };
    es.addEventListener("snapshot", parse(onSnapshot));
    es.addEventListener("update", parse(onUpdate));
    es.addEventListener("action", parse(onAction));
  }

  // ---------------------------------------------------------------- interaction
  document.querySelectorAll("th[data-sort]").forEach(function (th) {
    th.addEventListener("click", function () {
      var k = th.dataset.sort;
      if (state.sortKey === k) state.sortDir = -state.sortDir;
      else { state.sortKey = k; state.sortDir = (k === "position_id" || k === "asset" || k === "next") ? 1 : -1; }
      renderRows();
    });
  });
  document.getElementById("exposure").addEventListener("click", function (e) {
    var cardEl = e.target.closest(".xcard");
    if (!cardEl || cardEl.classList.contains("book")) return;
    var a = cardEl.dataset.asset;
    state.asset = state.asset === a ? null : a;
    firstPage();
    render();
  });
  var actionSelect = document.getElementById("action-filter");
  ACTIONS.forEach(function (a) {
    var o = document.createElement("option");
    o.value = a; o.textContent = a.replace("_", " ");
    actionSelect.appendChild(o);
  });
  actionSelect.addEventListener("change", function () {
    state.action = actionSelect.value || null;
    firstPage();
  });
  document.getElementById("next").addEventListener("click", function () {
    var pg = state.page;
    if (pg.next) goTo(pg.next, pg.back.concat([pg.cursor]), pg.number + 1);
  });
  document.getElementById("prev").addEventListener("click", function () {
    var pg = state.page;
    if (pg.back.length) goTo(pg.back[pg.back.length - 1], pg.back.slice(0, -1), pg.number - 1);
  });
  // The page's rows move on between events too (timers, ticks on other rows): refresh it.
  setInterval(function () { if (!document.hidden) loadPage(); }, PAGE_REFRESH_MS);

  // Countdowns and "ago" columns tick every second without a re-render.
  setInterval(function () {
    document.querySelectorAll("[data-due]").forEach(function (td) {
      var due = Number(td.dataset.due);
      if (td.firstChild && td.dataset.due) td.firstChild.textContent = dueText(due);
    });
    document.querySelectorAll("[data-at]").forEach(function (td) {
      if (td.dataset.at) td.textContent = agoText(Number(td.dataset.at));
    });
  }, 1000);

  connect();
})();
