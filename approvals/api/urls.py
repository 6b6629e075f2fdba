from __future__ import annotations

from rest_framework.routers import SimpleRouter

from approvals.api import views

router = SimpleRouter()
router.register("message-templates", views.MessageTemplateViewSet, basename="message-template")
router.register("template-versions", views.TemplateVersionViewSet, basename="template-version")
router.register("review-decisions", views.ReviewDecisionViewSet, basename="review-decision")
router.register("review-queue", views.ReviewQueueViewSet, basename="review-queue")
router.register("approval-policies", views.ApprovalPolicyViewSet, basename="approval-policy")

urlpatterns = router.urls
