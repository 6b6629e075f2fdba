from __future__ import annotations

from rest_framework.routers import SimpleRouter

from messaging.api import views

router = SimpleRouter()
router.register("channel-accounts", views.ChannelAccountViewSet, basename="channel-account")
router.register("conversations", views.ConversationViewSet, basename="conversation")
router.register("messages", views.MessageViewSet, basename="message")
router.register(
    "conversation-events", views.ConversationEventViewSet, basename="conversation-event"
)
router.register("automation-rules", views.AutomationRuleViewSet, basename="automation-rule")
router.register("agent-presence", views.AgentPresenceViewSet, basename="agent-presence")
router.register(
    "conversation-exports", views.ConversationExportViewSet, basename="conversation-export"
)

urlpatterns = router.urls
