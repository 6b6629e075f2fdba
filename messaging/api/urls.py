from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from messaging.api import campaigns, integration, metrics, views

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
router.register("campaigns", campaigns.CampaignViewSet, basename="campaign")
router.register(
    "webhook-subscriptions", integration.WebhookSubscriptionViewSet, basename="webhook-subscription"
)

urlpatterns = [
    *router.urls,
    path("metrics/overview/", metrics.MetricsOverviewView.as_view(), name="metrics-overview"),
    path("metrics/timeseries/", metrics.MetricsTimeseriesView.as_view(), name="metrics-timeseries"),
    path("metrics/handoffs/", metrics.MetricsHandoffsView.as_view(), name="metrics-handoffs"),
    path("metrics/consent/", metrics.MetricsConsentView.as_view(), name="metrics-consent"),
]
