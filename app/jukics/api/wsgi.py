"""WSGI entry point for gunicorn: `jukics.api.wsgi:app`, built from $JUKICS_CONFIG in each worker."""

from __future__ import annotations

import os

from jukics.config import load_config
from jukics.service import build_app

app = build_app(load_config(os.environ.get("JUKICS_CONFIG", "/etc/jukics/jukics.toml")))
