from django.apps import AppConfig


class BackofficeConfig(AppConfig):
    name = "backoffice"
    verbose_name = "Back office"

    def ready(self) -> None:
        from payouts.signals import engine_alert

        engine_alert.connect(_on_engine_alert, dispatch_uid="backoffice.engine_alert")


def _on_engine_alert(
    sender: object,
    *,
    key: str,
    kind: str,
    message: str,
    order_kind: str = "",
    order_id: object = None,
    **_: object,
) -> None:
    """The engine asks for a person: open (or refresh) the alert for this incident."""
    from backoffice.operations import _order_link, alert_raise

    link = _order_link(order_kind, order_id) if order_kind and order_id else ""
    alert_raise(key=key, kind=kind, message=message, link=link)
