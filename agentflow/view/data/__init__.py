"""What the viewer's pages read: functions that take a SQLAlchemy ``Session`` and return
plain values for a template. They only read, and page large tables in SQL."""
