"""Topic names: the public contract's, the internal ones, and their dead-letter twins."""

from __future__ import annotations

PURCHASES = "jifen.purchases"
TASKS = "jifen.tasks"
CHECKINS = "jifen.checkins"
REFERRALS = "jifen.referrals"
MEMBERS = "jifen.members"
LEDGER_COMMANDS = "jifen.ledger.commands"
LEDGER_ENTRIES = "jifen.ledger.entries"
TIERS = "jifen.tiers"
REDEMPTIONS = "jifen.redemptions"

INBOUND = (PURCHASES, TASKS, CHECKINS, REFERRALS, MEMBERS)
PUBLIC_OUTBOUND = (LEDGER_ENTRIES, TIERS, REDEMPTIONS)
INTERNAL = (LEDGER_COMMANDS,)


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


def named(topic: str, prefix: str = "") -> str:
    """A topic's name on the cluster: a prefix lets several Jifen installs (or test runs) share one."""
    return f"{prefix}{topic}"


def all_topics(prefix: str = "") -> list[str]:
    base = [*INBOUND, *INTERNAL, *PUBLIC_OUTBOUND]
    return [named(t, prefix) for t in base] + [named(dlq(t), prefix) for t in base]
