"""HTTP routes (only the broker's status/ping views; not needed for websockets)."""

from django.urls import include, path

urlpatterns = [path("dasf-broker/", include("dasf_broker.urls"))]
