"""Task stubs and Python tasks.

`get_ticket` is served by celeriac (CELERY_TASK_ROUTES sends it to the `celeriac` queue; the SQL
is in celeriac.toml). The Python body is only a fallback: it runs if the route is removed
(rollback) and returns the same JSON.
"""
from celery import shared_task
from django.core.cache import cache
from django.db.models import Count

from .models import Ticket


@shared_task(name="tickets.get_ticket")
def get_ticket(ticket_id):
    ticket = Ticket.objects.filter(pk=ticket_id).first()
    return None if ticket is None else ticket.as_dict()


@shared_task(name="tickets.get_ticket_py")
def get_ticket_py(ticket_id):
    """The Python way to do what celeriac does: Django's cache framework in front of the ORM
    (the benchmark's baseline)."""
    key = f"ticket:{ticket_id}"
    value = cache.get(key)
    if value is None:
        ticket = Ticket.objects.filter(pk=ticket_id).first()
        value = {"found": ticket is not None, "value": ticket and ticket.as_dict()}
        cache.set(key, value, timeout=300)
    return value["value"]


@shared_task(name="tickets.report")
def report():
    """Tickets per status: runs on the Python workers."""
    rows = Ticket.objects.values("status").annotate(n=Count("id")).order_by("status")
    return {"total": Ticket.objects.count(), "by_status": {r["status"]: r["n"] for r in rows}}
