"""jifen.tasks: tasks and behaviours from HR and task systems, and manual awards."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.contracts.base import Channel, Contract, Id, NonBlank, ProgramId


class TaskCompleted(Contract):
    TYPE: ClassVar[str] = "jifen.task.completed.v1"

    program_id: ProgramId = "default"
    member_id: Id
    task_id: Id
    task_type: Id


class PointsAwarded(Contract):
    """A manual award (goodwill from customer service, a manager's bonus). Earn pays it only when the event's
    CloudEvents `source` is one the programme trusts, and at most the programme's limit per award; `award_id`
    is the award's own id, so a resubmitted form with a new event id is not paid twice."""

    TYPE: ClassVar[str] = "jifen.points.awarded.v1"

    program_id: ProgramId = "default"
    member_id: Id
    award_id: Id
    points: int = Field(gt=0)
    reason: NonBlank
    awarded_by: Id


CHANNEL = Channel("jifen.tasks", "in", "Tasks and behaviours from HR and task systems, and manual awards (paid only "
                  "from the CloudEvents sources a programme trusts).", (TaskCompleted, PointsAwarded))
