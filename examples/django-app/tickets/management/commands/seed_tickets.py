"""Create a few tickets (idempotent): `manage.py seed_tickets`."""
from decimal import Decimal

from django.core.management.base import BaseCommand

from tickets.models import Ticket

SEED = [
    (1, "printer on fire", "open", Decimal("12.50")),
    (2, "no coffee", "open", None),
    (3, "done", "closed", Decimal("1.00")),
]


class Command(BaseCommand):
    help = "Create the example tickets."

    def handle(self, *args, **options):
        for pk, title, status, price in SEED:
            Ticket.objects.update_or_create(
                pk=pk, defaults={"title": title, "status": status, "price": price}
            )
        self.stdout.write(f"{len(SEED)} tickets")
