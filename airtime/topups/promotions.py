"""Promotions: the bonus a top-up earns, decided when the order is made and shown before payment."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select, text
from sqlalchemy.orm import Session

from airtime.money import apply_rate
from airtime.topups.models import CREDITED_ONCE_WHERE, Promotion, PromotionKind, TopupOrder


@dataclass(frozen=True, slots=True)
class Bonus:
    promotion: Promotion | None
    bonus_minor: int


def bonus_for(promotion: Promotion, amount_minor: int) -> int:
    """The bonus one promotion gives on an amount (percentages round half to even)."""
    if promotion.kind == PromotionKind.PERCENT:
        bonus = apply_rate(amount_minor, promotion.value)
    else:
        bonus = promotion.value
    if promotion.bonus_max_minor is not None:
        bonus = min(bonus, promotion.bonus_max_minor)
    return max(bonus, 0)


def best_bonus(
    session: Session, *, line_id: int, currency: str, amount_minor: int, channel: str, now: datetime
) -> Bonus:
    """The most generous promotion this top-up qualifies for (they do not stack)."""
    candidates = session.scalars(
        select(Promotion).where(
            Promotion.active.is_(True),
            Promotion.currency == currency,
            Promotion.starts_at <= now,
            Promotion.ends_at > now,
            Promotion.amount_min_minor <= amount_minor,
        )
    ).all()
    return choose_bonus(
        candidates,
        amount_minor=amount_minor,
        channel=channel,
        topped_up_before=lambda: bool(
            session.scalar(
                select(
                    exists().where(
                        TopupOrder.line_id == line_id,
                        # Written as the partial index's own predicate, so both databases use it.
                        text(CREDITED_ONCE_WHERE),
                    )
                )
            )
        ),
    )


def choose_bonus(
    candidates: Sequence[Promotion], *, amount_minor: int, channel: str, topped_up_before: Callable[[], bool]
) -> Bonus:
    """The best of the promotions running now for this amount (``topped_up_before`` is only
    asked when a first-top-up-only promotion is among them)."""
    eligible = [
        promotion for promotion in candidates if not promotion.channels or channel in promotion.channels
    ]
    if any(promotion.first_topup_only for promotion in eligible) and topped_up_before():
        eligible = [promotion for promotion in eligible if not promotion.first_topup_only]
    best = max(
        eligible, key=lambda promotion: (bonus_for(promotion, amount_minor), -promotion.id), default=None
    )
    if best is None:
        return Bonus(None, 0)
    return Bonus(best, bonus_for(best, amount_minor))
