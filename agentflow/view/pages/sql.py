"""The read-only SQL page, with example queries one click away."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

from ..db import engine, get_session
from ..examples import example_queries
from ..errors import BadParameter
from ..sql import MAX_QUERY_CHARS, QueryError, QueryRefused, run_query
from . import str_arg

bp = Blueprint("sql", __name__)


@bp.route("/sql", methods=["GET", "POST"])
def index():
    """``?q=SELECT …``, so a query is a link a colleague can open; the form posts (a long
    query may not fit in a URL) and the result links its GET form."""
    if request.method == "POST":
        q = request.form.get("q", "").strip()
        if len(q) > MAX_QUERY_CHARS:
            raise BadParameter(f"q is {len(q)} characters long; at most {MAX_QUERY_CHARS}")
    else:
        q = str_arg("q", max_chars=MAX_QUERY_CHARS)
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
