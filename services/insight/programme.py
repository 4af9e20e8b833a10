"""What insight reads of a programme file: its header (zone, currency, point value) and the price of each reward,
for the cheapest reward the health indicators and balance bands are measured against. The `rewards` section is the
redemption service's; insight only reads prices from it and leaves everything else to that service's checks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.programmes import ProgrammeVersion


class RewardPrice(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    reward_id: str
    points: int = Field(ge=1)


class InsightProgramme(ProgrammeVersion):
    rewards: list[RewardPrice] = Field(default_factory=list)

    @property
    def cheapest_reward(self) -> int | None:
        return min((r.points for r in self.rewards), default=None)
