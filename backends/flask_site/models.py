"""The shared ``todos`` table, mapped as Django's migrations create it.

The schema belongs to Django: nothing here creates or alters tables.
"""

from __future__ import annotations

from datetime import datetime, timezone

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Todo(db.Model):
    __tablename__ = "todos"

    # SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    title: Mapped[str] = mapped_column(String(200))
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str] = mapped_column(String(150))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    def __init__(self, *, owner: str, title: str, done: bool = False) -> None:
        now = utcnow()
        super().__init__(owner=owner, title=title, done=done, created_at=now, updated_at=now)

    def update(self, changes: dict) -> None:
        """Apply validated changes; ``updated_at`` moves even when nothing else does, as in Django."""
        for name, value in changes.items():
            setattr(self, name, value)
        self.updated_at = utcnow()
