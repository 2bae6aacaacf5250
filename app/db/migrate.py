"""Running the alembic migrations from code (``runyard db upgrade``, ``serve``, tests)."""

from __future__ import annotations

from alembic.config import Config

from alembic import command
from app.db.engine import ensure_sqlite_folder, normalize_url
from app.paths import ALEMBIC_DIR


def alembic_config(url: str) -> Config:
    """An alembic ``Config`` for ``url`` that needs no ini file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    # ConfigParser interpolation would choke on '%' in a password.
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema of ``url`` up to ``revision``."""
    ensure_sqlite_folder(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Take the schema of ``url`` down to ``revision``."""
    command.downgrade(alembic_config(url), revision)
