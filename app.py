"""WSGI entry point: ``gunicorn app:app``."""
from workbench import create_app

app = create_app()
