"""Search by 氏名 + 生年月日 from one index: (name_seion_hash, birth_date_hash) replaces (name_seion_hash).

Revision ID: 0010_search_index
Revises: 0009_terminal_app
Create Date: 2026-12-07

Both columns are keyed hashes (HMAC-SHA256, 16 bytes, under the search key derived from the data
key; jukics.store.crypto) that every row already carries, so there is nothing to backfill: CREATE
INDEX builds the new index from the stored hashes in the migration. The old single-column index is
dropped because the new one serves its queries (氏名 + 住所 reads the name prefix), so intake writes
no extra B-tree: a new resident still costs one insert here.

Measured at 1,000,000 residents (bench/search.py): each search by 氏名 + 生年月日 read every
resident of the same 清音化かな氏名 (~125 in the synthetic data, far more for common real names)
and its table row to compare the birth date hash; now it reads the matching entries only.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010_search_index"
down_revision: str | None = "0009_terminal_app"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "ix_residents_current_name_seion_hash"
NEW = "ix_residents_current_name_birth"


def upgrade() -> None:
    # new first, then drop: a name search always has an index to use
    op.create_index(NEW, "residents_current", ["name_seion_hash", "birth_date_hash"])
    op.drop_index(OLD, table_name="residents_current")


def downgrade() -> None:
    op.create_index(OLD, "residents_current", ["name_seion_hash"])
    op.drop_index(NEW, table_name="residents_current")
