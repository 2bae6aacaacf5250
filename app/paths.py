"""Where the project's non-Python files live (templates, static files, migrations)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"
ALEMBIC_DIR = ROOT / "alembic"
