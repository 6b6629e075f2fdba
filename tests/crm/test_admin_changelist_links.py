"""Contact changelist rows link to their change page with the list's filters preserved, as
Django would write the link, although it is built once per page (LargeChangeList)."""

from __future__ import annotations

import pytest
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.views.main import ChangeList
from django.test import Client
from django.urls import reverse

from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:crm_contact_changelist")


@pytest.mark.parametrize(
    "params", [{}, {"language__exact": "de"}, {"q": "berg & sö", "o": "2", "p": "1"}]
)
def test_row_links_are_what_django_writes(marketing, team, params):
    for language in ("de", "de", "en"):
        ContactFactory(team=team, language=language, last_name="Berg & Söhne")
    client = Client()
    client.force_login(marketing)
    response = client.get(CHANGELIST, params)
    assert response.status_code == 200
    changelist = response.context["cl"]
    html = response.content.decode()
    preserved = changelist.model_admin.get_preserved_filters(response.wsgi_request)
    assert changelist.result_list
    for contact in changelist.result_list:
        expected = add_preserved_filters(
            {"preserved_filters": preserved, "opts": changelist.opts},
            ChangeList.url_for_result(changelist, contact),
        )
        assert changelist.url_for_result(contact) == expected
        assert f'href="{expected}"'.replace("&", "&amp;") in html
