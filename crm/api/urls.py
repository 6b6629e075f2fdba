from __future__ import annotations

from rest_framework.routers import SimpleRouter

from crm.api import views
from crm.api.imports import ContactImportViewSet

router = SimpleRouter()
router.register("teams", views.TeamViewSet, basename="team")
router.register("contacts", views.ContactViewSet, basename="contact")
router.register("contact-points", views.ContactPointViewSet, basename="contact-point")
router.register("tags", views.TagViewSet, basename="tag")
router.register("segments", views.SegmentViewSet, basename="segment")
router.register("contact-imports", ContactImportViewSet, basename="contact-import")

urlpatterns = router.urls
