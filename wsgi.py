"""WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app`` (config from AGENTFLOW_CONFIG)."""
from agentflow.server import create_app

app = create_app()
