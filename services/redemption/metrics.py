"""What the redemption service measures (jobs.py `watch` reads its gauges from the database)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from shared.metrics import Family, counter, gauge, histogram

SERVICE = "redemption"


class RedemptionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def count(name: str, doc: str, *labels: str) -> Family:
            return counter(registry, SERVICE, name, doc, labels)

        self.redemptions = count("jifen_redemptions", "Redemptions by reward and the status they reached (pending "
                                 "when asked for, then completed, rejected or cancelled)", "program_id", "reward_id",
                                 "status")
        self.refusals = count("jifen_redemption_refusals", "Refusals, by what was refused (redeem, cancel, pay, "
                              "capture, void, coupon) and reason: the reason of the HTTP answer and the outcome event",
                              "program_id", "operation", "reason")
        self.points = count("jifen_redemption_points", "Points redeemed by completed redemptions, and given back by "
                            "cancellations", "program_id", "direction")
        self.payments = count("jifen_points_payments", "Points payments by the status they reached", "program_id",
                              "status")
        self.payment_points = count("jifen_points_payment_points", "Points captured by points payments, and given "
                                    "back by refunds", "program_id", "direction")
        self.coupons = count("jifen_coupons", "Coupons issued, used and voided", "program_id", "event")
        self.ignored = count("jifen_redemption_events_ignored", "Events that concern nothing of this service's (a "
                             "hold of another service, a refund of an order not paid with points)", "reason")
        self.ledger_refusals = count("jifen_redemption_ledger_refusals", "Cancellations and refunds whose reversal "
                                     "the ledger refused: a person must look", "program_id", "reason")
        self.lowest_points = gauge(registry, SERVICE, "jifen_rewards_lowest_points", "The cheapest reward's price in "
                                   "the catalogue in force: members should hold 2–3 times it (the seeds' health "
                                   "signal)", ["program_id"])
        self.stock_left = gauge(registry, SERVICE, "jifen_redemption_stock_left_items",
                                "Stock left of rewards with stock", ["program_id", "reward_id"])
        self.pending = gauge(registry, SERVICE, "jifen_redemptions_pending", "Redemptions waiting for the ledger")
        self.pending_age = gauge(registry, SERVICE, "jifen_redemption_pending_oldest_seconds", "Age of the oldest "
                                 "pending redemption (0: none)")
        self.hold_to_capture = histogram(registry, SERVICE, "jifen_redemption_hold_to_capture_seconds", "From the "
                                         "ledger placing a redemption's hold to capturing it (the ledger's own times)")
        self.asked_to_settled = histogram(registry, SERVICE, "jifen_redemption_settle_seconds", "From a "
                                          "redemption's request to its completion or rejection")

