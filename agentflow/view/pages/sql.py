"""The read-only SQL page, with example queries one click away."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template

from ..db import engine, get_session
from ..examples import example_queries
from ..sql import QueryError, QueryRefused, run_query
from . import str_arg

bp = Blueprint("sql", __name__)


@bp.get("/sql")
def index():
    """``?q=SELECT …``: a GET, so a query is a link a colleague can open."""
    q = str_arg("q", max_chars=20_000)
    result = error = None
    refused = False
    status = 200
    if q:
        try:
            result = run_query(engine(), q, max_rows=current_app.config["SQL_MAX_ROWS"],
                               time_limit_s=current_app.config["SQL_TIME_LIMIT_S"])
        except QueryError as err:
            error, refused, status = str(err), isinstance(err, QueryRefused), 400
    return render_template("sql.html", q=q, result=result, error=error, refused=refused,
                           examples=example_queries(get_session()),
                           max_rows=current_app.config["SQL_MAX_ROWS"],
                           time_limit_s=current_app.config["SQL_TIME_LIMIT_S"]), status
