"""The tickets app."""
from django.apps import AppConfig


class TicketsConfig(AppConfig):
    name = "tickets"

    def ready(self):
        from . import signals  # noqa: F401  (connects post_save/post_delete)
