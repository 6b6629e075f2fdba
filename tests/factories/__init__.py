from __future__ import annotations

from tests.factories.approvals import (
    ApprovalPolicyFactory,
    ApprovalStageFactory,
    MessageTemplateFactory,
    TemplateVersionFactory,
)
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
from tests.factories.messaging import ChannelAccountFactory

__all__ = [
    "ApprovalPolicyFactory",
    "ApprovalStageFactory",
    "ChannelAccountFactory",
    "ConsentTextFactory",
    "ContactFactory",
    "ContactPointFactory",
    "DataSubjectRequestFactory",
    "MessageTemplateFactory",
    "PurposeFactory",
    "SegmentFactory",
    "TagFactory",
    "TeamFactory",
    "TemplateVersionFactory",
    "UserFactory",
]
