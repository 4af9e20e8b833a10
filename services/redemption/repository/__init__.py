"""The redemption service's tables and queries, one module per aggregate. A consumer batch reads what it settles in a
few statements and writes with one multi-row statement per table; an HTTP request touches the rows of one member."""

from services.redemption.repository import coupons, members, payments, redemptions, stock

__all__ = ["coupons", "members", "payments", "redemptions", "stock"]
