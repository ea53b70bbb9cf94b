"""The admin HTTP API: Starlette served by Hypercorn on Trio."""

from admin.app import AdminContext, create_app
from admin.errors import ApiError
from admin.server import AdminServer, serve_app

__all__ = ["AdminContext", "AdminServer", "ApiError", "create_app", "serve_app"]
