from django.apps import AppConfig


class PayoutsConfig(AppConfig):
    name = "payouts"

    def ready(self) -> None:
        # Register the payout kind with the order engine (no database access here).
        from payouts.engine import kind_register
        from payouts.kinds import PayoutKind

        kind_register(PayoutKind())
