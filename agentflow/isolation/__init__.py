"""Session confinement: the one layer every backend that runs session code uses.

A session's code never runs in the server's view of the machine. Each session gets a
*supervisor* — a small process started inside the session's jail (bubblewrap: its own
user, mount, pid, ipc, uts and network namespaces, an allocated uid, a cgroup for memory
and process count, a size-capped workspace). The server talks to it over a unix socket
whose listening end the server created in a folder only the server can enter, and does
no file work in the session's workspace as itself: shell commands, kernels and file
copies all happen inside, as the session's own identity.

Everything a supervisor says is treated as hostile input: answers are size-capped and
time-bounded, so no server thread waits on a session beyond the call's timeout.

- :mod:`.policy`     — what a backend asks for (limits, network) and the server's mode.
- :mod:`.identity`   — allocated uids, one per live session.
- :mod:`.cgroups`    — per-session memory and process limits; kill everything in a session.
- :mod:`.jail`       — the bubblewrap command line (what a session can see).
- :mod:`.supervisor` — the program inside the jail.
- :mod:`.channel`    — the server's side of the socket.
- :mod:`.session`    — start, reach and end a confined session.
- :mod:`.safefs`     — opening files below a root without following links.
"""
from .errors import IsolationError, IsolationUnavailable, SupervisorError, SupervisorGone, SupervisorTimeout
from .policy import IsolationMode, Limits, isolation_mode
from .session import ConfinedSession, Confinement

__all__ = [
    "ConfinedSession",
    "Confinement",
    "IsolationError",
    "IsolationMode",
    "IsolationUnavailable",
    "Limits",
    "SupervisorError",
    "SupervisorGone",
    "SupervisorTimeout",
    "isolation_mode",
]
