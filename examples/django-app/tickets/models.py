"""The Ticket model: Django owns the table (tickets_ticket); celeriac reads it."""
from django.db import models


class Ticket(models.Model):
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=20, default="open")
    price = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)

    def as_dict(self):
        """The same shape as celeriac's row (DECIMAL as a string with its scale)."""
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "price": None if self.price is None else str(self.price),
        }
