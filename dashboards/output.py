"""What every page writer shares (:mod:`dashboards.build`, :mod:`dashboards.trajectory`): this
code's views on a read-only catalog connection, the time a page says it was generated, and
the atomic write of a page. It imports no other page module, so the writers import it and
the imports run one way: ``build -> trajectory -> output``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from clipgeo.core.config import SQL_DIR
from clipgeo.store import catalog

__all__ = ["generated_at", "use_current_views", "write_page"]


def use_current_views(con) -> None:
    """This code's views (sql/views), as temporary views of a read-only connection: a catalog
    last migrated by older code still gets today's report views (they shadow the stored ones
    for this connection only; the next writable session stores them)."""
    import duckdb

    for f in sorted((SQL_DIR / "views").glob("*.sql")):
        try:
            catalog.execute(con, f.read_text().replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW")
                            .replace("CREATE OR REPLACE MACRO", "CREATE OR REPLACE TEMP MACRO"))
        except duckdb.CatalogException:  # over a table a newer migration adds (e.g. v_trajectory): not there yet
            continue


def generated_at() -> str:
    """Now, as a page's provenance shows it: ``YYYY-MM-DD HH:MM UTC``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_page(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, replaced in one
    step (unique per process: concurrent flows may write the same report); returns ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
