"""The metrics `--sweep` runs can be ranked by (`--rank-by`): light, for the argument parser."""

from __future__ import annotations

#: `--rank-by` choices: (summary key, True when higher is better, what it means).
RANK_BY: dict[str, tuple[str, bool, str]] = {
    "net_pnl": (
        "final_pnl_hedged",
        True,
        "final P&L following the advice, after hedge costs (USD), highest first",
    ),
    "max_drawdown": (
        "max_drawdown_hedged",
        False,
        "max drawdown following the advice (USD), smallest first",
    ),
    "return_risk": (
        "return_risk",
        True,
        "annualised return/risk (mean daily P&L / its std × √365), highest first",
    ),
    "hedge_cost": ("hedge_cost_usd", False, "hedge cost, spread + funding (USD), lowest first"),
}
DEFAULT_RANK_BY = "net_pnl"
