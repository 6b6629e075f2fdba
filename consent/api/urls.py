from __future__ import annotations

from rest_framework.routers import SimpleRouter

from consent.api import views
from consent.api.subjects import DataSubjectRequestViewSet

router = SimpleRouter()
router.register("purposes", views.PurposeViewSet, basename="purpose")
router.register("consent-texts", views.ConsentTextViewSet, basename="consent-text")
router.register("consents", views.ConsentViewSet, basename="consent")
router.register("consent-events", views.ConsentEventViewSet, basename="consent-event")
router.register("suppressions", views.SuppressionViewSet, basename="suppression")
router.register("withdrawal-reviews", views.WithdrawalReviewViewSet, basename="withdrawal-review")
router.register("data-subject-requests", DataSubjectRequestViewSet, basename="data-subject-request")

urlpatterns = router.urls
