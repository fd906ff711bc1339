"""Registry of modules that define ORM models, so migrations and tests see every table."""
import importlib

MODULES = ["workbench.models", "workbench.pipeline.records", "workbench.references",
           "workbench.policy", "workbench.serverruns", "workbench.idtokens",
           "workbench.sealed", "workbench.webhooks", "workbench.jobs", "workbench.sso"]


def import_all() -> None:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real import error inside an existing module
                raise


def include_name(name, type_, parent_names) -> bool:
    """Autogenerate's filter: the job engine's tables are its own (``jobqueue``)."""
    return not (type_ == "table" and name and name.startswith("procrastinate_"))
