"""``agentflow view``: a read-only web app over the AgentFlow database.

Runs, trajectories with their audit rows, run comparisons, synthesis trees, tool
statistics and a read-only SQL page, each at a stable URL. The database is opened
read-only (see :mod:`agentflow.view.db`); pages are rendered on the server with
autoescaped templates, charts are server-side SVG, and the one small script ships in the
package, so the viewer works offline.
"""
from .app import create_app as create_app

__all__ = ["create_app"]
