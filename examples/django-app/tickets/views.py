"""JSON views: one read served by celeriac, one report computed by a Python worker."""
from celery.exceptions import TimeoutError as CeleryTimeout
from django.http import JsonResponse

from .tasks import get_ticket, get_ticket_py, report as report_task

TIMEOUT = 10


def _wait(result):
    try:
        return result.get(timeout=TIMEOUT), None
    except CeleryTimeout:
        return None, JsonResponse({"error": "timeout"}, status=504)


def ticket(request, ticket_id):
    """Enqueue tickets.get_ticket (celeriac's queue) and return its result."""
    value, error = _wait(get_ticket.delay(ticket_id))
    if error:
        return error
    if value is None:
        return JsonResponse({"error": "not found"}, status=404)
    return JsonResponse(value)


def ticket_py(request, ticket_id):
    """The same read through a Python worker and Django's cache (benchmark baseline)."""
    value, error = _wait(get_ticket_py.delay(ticket_id))
    if error:
        return error
    if value is None:
        return JsonResponse({"error": "not found"}, status=404)
    return JsonResponse(value)


def report(request):
    """Enqueue tickets.report (a Python worker) and return its result."""
    value, error = _wait(report_task.delay())
    return error or JsonResponse(value)
