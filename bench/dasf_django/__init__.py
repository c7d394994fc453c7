"""Test/benchmark harness around the real dasf-broker-django broker (daphne)."""

from .harness import DjangoBroker, start_django_broker  # noqa: F401
