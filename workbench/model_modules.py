"""Registry of modules that define ORM models, so migrations and tests see every table."""
import importlib

MODULES = ["workbench.models", "workbench.pipeline.records", "workbench.references",
           "workbench.sso"]


def import_all() -> None:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real import error inside an existing module
                raise
