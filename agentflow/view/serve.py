"""Serving the viewer under gunicorn (``agentflow view``): one worker process with a
few threads, which builds the app — and so opens its engine — after the fork."""
from __future__ import annotations

from gunicorn.app.base import BaseApplication

__all__ = ["ViewerApplication"]


class ViewerApplication(BaseApplication):
    """gunicorn with the viewer's app factory.

    Args:
        config: the app's config (see :func:`agentflow.view.create_app`).
        settings: gunicorn settings (``bind``, ``threads``...).
    """

    def __init__(self, config: dict, settings: dict):
        self._config, self._settings = config, settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._settings.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import create_app

        return create_app(self._config)
