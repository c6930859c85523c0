"""What the viewer's pages read: functions that take a SQLAlchemy ``Session`` and return
plain values for a template. They only read, and page large tables in SQL."""


def like_pattern(text: str) -> str:
    """A ``LIKE`` pattern matching ``text`` anywhere; its own ``%``, ``_`` and ``\\`` are
    literal (use with ``escape="\\"``)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
