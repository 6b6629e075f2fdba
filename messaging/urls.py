"""Provider webhooks, included under /webhooks/ (DESIGN: /webhooks/<provider>/<account>/)."""

from __future__ import annotations

from django.urls import path

from messaging import views

app_name = "messaging"

urlpatterns = [
    path("whatsapp/<slug:account>/", views.whatsapp_webhook, name="webhook-whatsapp"),
    path("twilio/<slug:account>/", views.twilio_webhook, name="webhook-twilio"),
]
