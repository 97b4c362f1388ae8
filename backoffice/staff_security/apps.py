from django.apps import AppConfig


class StaffSecurityConfig(AppConfig):
    name = "backoffice.staff_security"
    label = "staff_security"
    verbose_name = "Staff sign-in"

    def ready(self) -> None:
        from backoffice.services_auth import connect_audit_receivers

        connect_audit_receivers()
