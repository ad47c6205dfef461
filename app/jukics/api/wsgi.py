"""WSGI entry points for gunicorn, built from $JUKICS_CONFIG in each worker.

``jukics.api.wsgi:app`` is the intake app; ``jukics.api.wsgi:peer_app`` the peer-facing listener's;
``jukics.api.wsgi:terminal_app`` the counter terminals'.
Each is built on first use, so a worker of one listener never builds the other.
"""

from __future__ import annotations

import os
from typing import Any

from jukics.config import load_config


def __getattr__(name: str) -> Any:
    from jukics import service

    config = load_config(os.environ.get("JUKICS_CONFIG", "/etc/jukics/jukics.toml"))
    if name == "app":
        value = service.build_app(config)
    elif name == "peer_app":
        value = service.build_peer_app(config)
    elif name == "terminal_app":
        value = service.build_terminal_app(config)
    else:
        raise AttributeError(name)
    globals()[name] = value
    return value
