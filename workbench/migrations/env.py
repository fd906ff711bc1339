"""Alembic environment: runs on the connection the vault hands over, or on the URL."""
from alembic import context
from sqlalchemy import create_engine

from workbench.db import Base
import workbench.models  # noqa: F401  (registers tables)
from workbench import model_modules

model_modules.import_all()
config = context.config
target = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=target, render_as_batch=True,
                          include_name=model_modules.include_name)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target, render_as_batch=True,
                          include_name=model_modules.include_name)
        with context.begin_transaction():
            context.run_migrations()


run()
