"""ASGI entry point: ``daphne dasf_django.asgi:application``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dasf_django.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()  # sets up Django before importing consumers

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

import dasf_broker.routing  # noqa: E402

# NOTE: websocket_urlpatterns is already wrapped in path(DASF_WEBSOCKET_URL_ROUTE, ...),
# so it must NOT be nested under another "ws/" path (the app_settings docstring suggests
# that, which would give /ws/ws/<topic>). dasf_broker's TokenAuthMiddlewareStack needs
# djangorestframework, so we use the plain channels AuthMiddlewareStack (anonymous users
# are mapped to guardian's AnonymousUser by the consumers).
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AuthMiddlewareStack(URLRouter(dasf_broker.routing.websocket_urlpatterns)),
    }
)
