from __future__ import annotations

from tests.factories.crm import (
    ContactFactory,
    ContactPointFactory,
    SegmentFactory,
    TagFactory,
    TeamFactory,
    UserFactory,
)

__all__ = [
    "ContactFactory",
    "ContactPointFactory",
    "SegmentFactory",
    "TagFactory",
    "TeamFactory",
    "UserFactory",
]
