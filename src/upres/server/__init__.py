"""`upres serve`: the HTTP API, the web page and a job queue that survives restarts."""

from upres.server.app import create_app
from upres.server.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]
