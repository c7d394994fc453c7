"""Minimal Django settings for running dasf-broker-django under daphne.

The sqlite path comes from the environment variable ``DASF_DJANGO_DB``
(set by harness.py to a file inside a per-run temp dir).
"""

import os

SECRET_KEY = "dasf-django-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "guardian",
    "channels",
    "dasf_broker",
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

_db = os.environ.get("DASF_DJANGO_DB")
if not _db:
    raise RuntimeError("DASF_DJANGO_DB must point to the sqlite file to use")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _db,
        # several processes (daphne + manage.py dasf_topic) share the file
        "OPTIONS": {"timeout": 30},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

ROOT_URLCONF = "dasf_django.urls"
ASGI_APPLICATION = "dasf_django.asgi.application"

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

DASF_CREATE_TOPIC_ON_MESSAGE = True
DASF_STORE_MESSAGES = "disabled"
# dasf_broker.routing.websocket_urlpatterns already carries this prefix.
DASF_WEBSOCKET_URL_ROUTE = "ws/"

USE_TZ = True
TIME_ZONE = "UTC"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DASF_DJANGO_LOGLEVEL", "WARNING")},
    # harness.py waits for daphne's "Listening on TCP address ..." INFO line
    "loggers": {"daphne.server": {"level": "INFO"}},
}
