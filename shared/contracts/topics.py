"""The catalogue: every topic, the message types on it and its dead-letter twin. Topic creation, the consumer's
dispatch, AsyncAPI, the simulator and `jifen earn explain` all read it; a new topic is a module beside this one and a
line in `CHANNELS`."""

from __future__ import annotations

from shared.contracts import (
    checkins,
    insight,
    ledger_commands,
    ledger_entries,
    members,
    purchases,
    redemptions,
    referral_outcomes,
    referrals,
    tasks,
    tiers,
)
from shared.contracts.base import Channel, Contract, dlq

__all__ = ["Channel", "dlq"]  # re-exported: `topics.dlq(name)` reads well where topics are named

CHANNELS: tuple[Channel, ...] = (purchases.CHANNEL, tasks.CHANNEL, checkins.CHANNEL, referrals.CHANNEL,
                                 members.CHANNEL, ledger_commands.CHANNEL, ledger_entries.CHANNEL, tiers.CHANNEL,
                                 redemptions.CHANNEL, referral_outcomes.CHANNEL, insight.CHANNEL)

PURCHASES = purchases.CHANNEL.topic
TASKS = tasks.CHANNEL.topic
CHECKINS = checkins.CHANNEL.topic
REFERRALS = referrals.CHANNEL.topic
MEMBERS = members.CHANNEL.topic
LEDGER_COMMANDS = ledger_commands.CHANNEL.topic
LEDGER_ENTRIES = ledger_entries.CHANNEL.topic
TIERS = tiers.CHANNEL.topic
REDEMPTIONS = redemptions.CHANNEL.topic
REFERRAL_OUTCOMES = referral_outcomes.CHANNEL.topic
INSIGHT = insight.CHANNEL.topic

INBOUND = tuple(c.topic for c in CHANNELS if c.external)

_BY_TOPIC = {c.topic: c for c in CHANNELS}
_BY_CONTRACT = {contract: c for c in CHANNELS for contract in c.types}


def channel(topic: str) -> Channel:
    """The channel of a topic named without its prefix."""
    return _BY_TOPIC[topic]


def channel_of(contract: type[Contract]) -> Channel:
    """The one channel a message type travels on."""
    return _BY_CONTRACT[contract]


def contracts() -> dict[str, type[Contract]]:
    """Every message type of every channel, by its CloudEvents type."""
    return {t.TYPE: t for c in CHANNELS for t in c.types}


def named(topic: str, prefix: str = "") -> str:
    """A topic's name on the cluster: a prefix lets several Jifen installs (or test runs) share one."""
    return f"{prefix}{topic}"


def all_topics(prefix: str = "") -> list[str]:
    """Every topic `jifen stack up` and the tests create: each channel and its dead-letter twin."""
    return [named(name, prefix) for c in CHANNELS for name in (c.topic, c.dlq)]


def _check() -> None:
    seen: dict[str, str] = {}
    for c in CHANNELS:
        for t in c.types:
            if not t.TYPE or t.TYPE in seen:
                raise ValueError(f"{t.__name__} on {c.topic}: a message type needs a TYPE of its own, on one channel")
            seen[t.TYPE] = c.topic


_check()
