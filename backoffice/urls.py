from django.urls import path

from backoffice.admin_site import site
from backoffice.health import healthz
from backoffice.webhooks import ChangeNowWebhookView, NowPaymentsWebhookView

urlpatterns = [
    path("admin/", site.urls),
    path("healthz", healthz, name="healthz"),
    path("webhooks/nowpayments/", NowPaymentsWebhookView.as_view(), name="webhook-nowpayments"),
    path("webhooks/changenow/", ChangeNowWebhookView.as_view(), name="webhook-changenow"),
]
