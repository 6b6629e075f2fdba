"""The metrics dashboard renders its charts in a real browser, from served assets only."""

from __future__ import annotations

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def demo(live_server):
    call_command("seed_demo", "--contacts", "60", "--password", "browser-pass-123", verbosity=0)


def test_marketing_sees_the_dashboard_charts(demo, journey, page, live_server):
    external = []
    page.on("request", lambda r: r.url.startswith(live_server.url) or external.append(r.url))
    journey.login("marketing", "browser-pass-123")
    page.goto("/admin/messaging/message/metrics/?group_by=team")
    page.wait_for_selector("svg.metrics-chart")
    journey.shot("dashboard by team")

    assert page.locator("svg.metrics-funnel").count() >= 1
    assert page.locator("svg.metrics-series polyline").count() >= 1
    stylesheet = page.evaluate(
        "[...document.styleSheets].some(s => (s.href || '').includes('metrics.css'))"
    )
    assert stylesheet
    assert external == []  # no CDN: every asset comes from our own server
