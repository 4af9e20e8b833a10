"""Redemptions as tills and apps make them, for the simulator (`jifen simulate` after `make up`): regulars redeem
coupons (one used at a till, one handed back), a newcomer without points is refused, and a regular pays part of a
basket with points; the outcomes counted for the summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# (status, body) of one HTTP call; the caller supplies it with the stack's API key.
Call = Callable[[str, str, dict[str, Any] | None, str | None], tuple[int, Any]]


@dataclass
class RedemptionRun:
    """What happened, counted: `completed`, `cancelled`, `rejected:<reason>`, `coupon used`, and the points payment."""

    outcomes: Counter[str] = field(default_factory=Counter)
    points_redeemed: int = 0
    points_returned: int = 0
    payment: str = "not tried"
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return ", ".join(f"{n:,} {what}" for what, n in sorted(self.outcomes.items())) or "none"


def run_redemptions(call: Call, run_id: str, regulars: list[str], program_id: str = "default") -> RedemptionRun:
    """Each regular redeems a 5 yuan coupon (waiting for the outcome); the first coupon is used on an order, the
    second redemption is cancelled (its points come back); a newcomer without points is refused; the last regular
    pays 20 yuan of a 100 yuan basket with 2,000 points, captured."""
    run = RedemptionRun()
    base = f"/v1/programs/{program_id}"
    done: list[dict[str, Any]] = []
    for n, member in enumerate([*regulars, f"{run_id}-newcomer"]):
        status, body = call("POST", f"{base}/redemptions?wait=10", {"member_id": member, "reward_id": "coupon-5"},
                            f"{run_id}-redeem-{n}")
        if status == 201 and body.get("status") == "completed":
            run.outcomes["completed"] += 1
            run.points_redeemed += body["points"]
            done.append(body)
        elif status == 409 and body.get("status") == "rejected":
            run.outcomes[f"refused: {body['error']}"] += 1
        else:
            run.problems.append(f"redeem for {member}: HTTP {status} {body}")
    if done:
        first = done[0]
        status, body = call("POST", f"{base}/coupons/{first['coupon']['code']}/use", {"order_id": f"{run_id}-till-1"},
                            None)
        if status == 200 and body.get("status") == "used":
            run.outcomes["coupon used"] += 1
        else:
            run.problems.append(f"coupon use: HTTP {status} {body}")
    if len(done) > 1:
        second = done[1]
        status, body = call("POST", f"{base}/redemptions/{second['redemption_id']}/cancel", None, None)
        if status == 200 and body.get("status") == "cancelled":
            run.outcomes["completed"] -= 1
            run.outcomes["cancelled"] += 1
            run.points_returned += second["points"]
        else:
            run.problems.append(f"cancel: HTTP {status} {body}")
    if regulars:
        run.payment = _pay(call, base, run_id, regulars[-1], run)
    return run


def _pay(call: Call, base: str, run_id: str, member: str, run: RedemptionRun) -> str:
    status, body = call("POST", f"{base}/payments?wait=10", {"member_id": member, "order_id": f"{run_id}-basket",
                                                            "points": 2000, "basket_total": "100.00"},
                        f"{run_id}-pay")
    if status != 201 or body.get("status") != "authorised":
        run.problems.append(f"payment: HTTP {status} {body}")
        return f"✘ not authorised ({body.get('error', status)})"
    status, captured = call("POST", f"{base}/payments/{body['payment_id']}/capture?wait=10", None, None)
    if status != 200 or captured.get("status") != "captured":
        run.problems.append(f"capture: HTTP {status} {captured}")
        return f"✘ authorised, not captured ({captured.get('error', status)})"
    return (f"{captured['captured_points']:,} points paid {captured['captured_value']} {captured['currency']} "
            f"of a 100.00 basket ({member})")
