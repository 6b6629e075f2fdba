import pytest

from crm.ledger import verify_chain
from messaging.errors import SendRefused
from messaging.models import ConversationEvent, MessageStatus, OutboxEntry
from messaging.providers.console import outbox, outbox_clear
from messaging.services import message_send
from tests.consent.helpers import grant_consent
from tests.factories import ChannelAccountFactory, PurposeFactory
from tests.messaging.helpers import reachable_contact, receive_text, sendable_version

pytestmark = pytest.mark.django_db


def test_smoke(team, django_capture_on_commit_callbacks):
    outbox_clear()
    account = ChannelAccountFactory(team=team)
    purpose = PurposeFactory(team=team, allowed_channels=["whatsapp"])
    version = sendable_version(team, purpose=purpose)
    contact = reachable_contact(team)
    with pytest.raises(SendRefused) as exc:
        message_send(contact=contact, account=account, actor=None, template_version=version)
    assert exc.value.code == "no_consent"
    grant_consent(contact, purpose, "whatsapp")
    with django_capture_on_commit_callbacks(execute=True):
        message = message_send(
            contact=contact, account=account, actor=None, template_version=version
        )
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT, message.error_detail
    assert len(outbox) == 1
    assert OutboxEntry.objects.get().state == "done"
    with pytest.raises(SendRefused) as exc:
        message_send(contact=contact, account=account, actor=None, text="hi")
    assert exc.value.code == "outside_service_window"
    receive_text(account, contact)
    with django_capture_on_commit_callbacks(execute=True):
        reply = message_send(contact=contact, account=account, actor=None, text="hi")
    reply.refresh_from_db()
    assert reply.status == "sent"
    events = list(ConversationEvent.objects.order_by("sequence"))
    assert [e.kind for e in events] == [
        "message_out",
        "status",
        "message_in",
        "message_out",
        "status",
    ]
    assert verify_chain(1, events) is None


def test_direct(team):
    from messaging.services import message_deliver

    account = ChannelAccountFactory(team=team)
    version = sendable_version(team)
    contact = reachable_contact(team)
    message = message_send(contact=contact, account=account, actor=None, template_version=version)
    assert message_deliver(message_id=message.pk) == "sent"
