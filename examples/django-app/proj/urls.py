"""URLs of the example project."""
from django.urls import path

from tickets import views

urlpatterns = [
    path("tickets/<int:ticket_id>/", views.ticket, name="ticket"),
    path("tickets-py/<int:ticket_id>/", views.ticket_py, name="ticket-py"),
    path("report/", views.report, name="report"),
]
