from __future__ import annotations

from tests.factories.consent import (
    ConsentTextFactory,
    DataSubjectRequestFactory,
    PurposeFactory,
)
from tests.factories.crm import (
    ContactFactory,
    ContactPointFactory,
    SegmentFactory,
    TagFactory,
    TeamFactory,
    UserFactory,
)

__all__ = [
    "ConsentTextFactory",
    "ContactFactory",
    "ContactPointFactory",
    "DataSubjectRequestFactory",
    "PurposeFactory",
    "SegmentFactory",
    "TagFactory",
    "TeamFactory",
    "UserFactory",
]
