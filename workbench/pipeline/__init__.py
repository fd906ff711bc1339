"""Pipelines: parse → plan → execute → mask → record."""
