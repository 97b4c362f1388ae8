from django.contrib import admin
from django.urls import path

from backoffice.webhooks import ChangeNowWebhookView, NowPaymentsWebhookView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("webhooks/nowpayments/", NowPaymentsWebhookView.as_view(), name="webhook-nowpayments"),
    path("webhooks/changenow/", ChangeNowWebhookView.as_view(), name="webhook-changenow"),
]
