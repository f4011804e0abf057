"""Keep celeriac's cache (and the Python baseline's Django cache) fresh when a Ticket changes."""
import logging

from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import celeriac_cache
from .models import Ticket

log = logging.getLogger(__name__)


@receiver(post_save, sender=Ticket)
@receiver(post_delete, sender=Ticket)
def ticket_changed(sender, instance, **kwargs):
    key = f"ticket:{instance.pk}"
    # The key celeriac's `tickets.get_ticket` task renders for this ticket (celeriac.toml).
    celeriac_key = celeriac_cache.render(
        "tickets.get_ticket", "ticket:{ticket_id}", ticket_id=instance.pk
    )

    def invalidate():
        try:
            celeriac_cache.invalidate(celeriac_key)
            cache.delete(key)
        except Exception:
            # The row is committed; the cached copy stays until its TTL (l1_ttl in memory).
            log.exception("cache invalidation of %s failed", key)

    # After commit: a read between the invalidation and the commit would cache the old row.
    transaction.on_commit(invalidate)
