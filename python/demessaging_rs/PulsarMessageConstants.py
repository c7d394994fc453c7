"""Deprecated location of :mod:`demessaging_rs.messaging.constants` (kept for code written for demessaging)."""

from warnings import warn

from demessaging_rs.messaging.constants import *  # noqa: F401, F403

warn(
    "The demessaging_rs.PulsarMessageConstants module has been renamed to "
    "demessaging_rs.messaging.constants and will be removed soon!",
    DeprecationWarning,
    stacklevel=2,
)
