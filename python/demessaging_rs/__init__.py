"""demessaging-rs: DASF backend modules and clients with a Rust core.

A drop-in successor of ``demessaging``: swap ``from demessaging import main`` for
``from demessaging_rs import main`` and the backend runs unchanged, on the same wire protocol.
"""

from __future__ import annotations

import atexit

from demessaging_rs import _compat, _core
from demessaging_rs._core import __version__ as __version__, build_profile as build_profile
from demessaging_rs.backend import BackendModule, main
from demessaging_rs.broker import Broker
from demessaging_rs.config import configure, registry
from demessaging_rs.exceptions import (
    BrokerConnectionError as BrokerConnectionError,
    CallTimeout as CallTimeout,
    ConfigurationError as ConfigurationError,
    DemessagingError as DemessagingError,
    RemoteError as RemoteError,
)

__all__ = ["main", "configure", "registry", "BackendModule", "Broker"]

# deprogressapi's reports import `demessaging.PulsarMessageConstants`: provide it when (and only when) no
# real demessaging is installed (see demessaging_rs._compat)
_compat.install_fallback()

# from interpreter exit on, no thread of the core enters Python (see _core.finalize)
atexit.register(_core.finalize)
