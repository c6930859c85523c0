"""The HTTP layer (Flask). Only this package imports flask."""
from .app import create_app as create_app

__all__ = ["create_app"]
