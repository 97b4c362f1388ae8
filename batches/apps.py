from django.apps import AppConfig


class BatchesConfig(AppConfig):
    name = "batches"

    def ready(self) -> None:
        # Register the batch kind with the order engine (no database access here).
        from batches.kinds import BatchKind
        from payouts.engine import kind_register

        kind_register(BatchKind())
