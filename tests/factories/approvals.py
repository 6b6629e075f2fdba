from __future__ import annotations

import factory
from django.contrib.auth.models import Group
from factory.django import DjangoModelFactory

from approvals.models import (
    ApprovalPolicy,
    ApprovalStage,
    MessageTemplate,
    TemplateCategory,
    TemplateVersion,
)
from approvals.services import content_hash
from crm import roles
from crm.models import Channel, Language
from tests.factories.crm import TeamFactory


class MessageTemplateFactory(DjangoModelFactory):
    """A utility e-mail template (no purpose needed); pass channel/category/purpose to vary."""

    class Meta:
        model = MessageTemplate

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"programme_{n}")
    channel = Channel.EMAIL
    category = TemplateCategory.UTILITY
    language = Language.GERMAN


class TemplateVersionFactory(DjangoModelFactory):
    """A draft with its content hash. `state=` is for the transition-table test only: other
    tests reach a state through the services, so decisions and state changes stay true."""

    class Meta:
        model = TemplateVersion

    template = factory.SubFactory(MessageTemplateFactory)
    number = factory.Sequence(lambda n: n + 1)
    subject = "Ihr Kinoprogramm"
    body = "Hallo {{ first_name }}, diese Woche läuft ein neuer Film."
    variables = factory.LazyFunction(lambda: ["first_name"])

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        version = model_class(*args, **kwargs)
        version.content_hash = content_hash(version)
        version.save()
        return version


def role_group(name: str) -> Group:
    return Group.objects.get_or_create(name=name)[0]


class ApprovalPolicyFactory(DjangoModelFactory):
    class Meta:
        model = ApprovalPolicy
        django_get_or_create = ("team", "category")

    team = factory.SubFactory(TeamFactory)
    category = TemplateCategory.UTILITY
    name = factory.Sequence(lambda n: f"Review policy {n}")


class ApprovalStageFactory(DjangoModelFactory):
    class Meta:
        model = ApprovalStage

    policy = factory.SubFactory(ApprovalPolicyFactory)
    position = factory.Sequence(lambda n: n)
    name = factory.Sequence(lambda n: f"Stage {n}")
    group = factory.LazyFunction(lambda: role_group(roles.REVIEWER_EDITORIAL))
    approvals_required = 1
