"""The key catalogue: every key parses back to what built it, and no other service's key is mistaken for ours."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared import keys

ids = st.text(alphabet=st.characters(codec="ascii", exclude_characters=":|\n"), min_size=1, max_size=40)


@given(owner=st.sampled_from(sorted(keys.OWNERS)), owner_id=ids, command=st.sampled_from(sorted(keys.COMMANDS)),
       refund_id=st.one_of(st.just(""), ids))
def test_a_redemption_command_key_names_its_owner_and_command(owner: keys.Owner, owner_id: str,
                                                              command: keys.Command, refund_id: str) -> None:
    key = keys.redemption_command(owner, owner_id, command, refund_id)
    assert keys.parse_redemption_command(key) == keys.Held(owner, owner_id, command)
    assert keys.parse_hold(keys.hold_of(owner, owner_id)) == keys.Held(owner, owner_id)


def test_other_services_keys_are_not_redemptions() -> None:
    for key in (keys.earn_credit("e1", "base"), keys.referral_credit("r1", "referee"), keys.lot_expiry(7),
                keys.admin_command("k1", "abc"), "redeem:", "pay:p1:nosuch", "redeem:r1"):
        assert keys.parse_redemption_command(key) is None
    for hold in ("bench:1", "redeem:", "pay:a:b", "x"):
        assert keys.parse_hold(hold) is None


def test_a_long_refund_id_is_hashed_to_keep_the_key_an_id() -> None:
    key = keys.redemption_command("pay", "p1", "refund", "r" * 150)
    assert len(key) <= 200 and key.startswith("pay:p1:refund:sha256-")
    assert keys.parse_redemption_command(key) == keys.Held("pay", "p1", "refund")


@given(referral_id=ids, role=st.sampled_from(["referrer", "referee", "bonus"]), grant=st.integers(1, 5))
def test_a_referral_reversal_names_its_credit(referral_id: str, role: keys.Role, grant: int) -> None:
    credit = keys.referral_credit(referral_id, role, grant)
    assert keys.is_referral_credit(credit)
    assert keys.reversed_credit(keys.referral_reversal(credit)) == credit
    assert keys.reversed_credit(credit) is None


def test_contributions_say_what_they_came_from() -> None:
    assert keys.contribution_kind(keys.contribution("order", "o-1")) == "order"
    assert keys.contribution_kind(keys.contribution("entry", 12)) == "entry"
    assert keys.contribution_kind("lot:3") is None
