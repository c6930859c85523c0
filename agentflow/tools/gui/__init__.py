"""The GUI backend family: ``vm`` (a desktop) and ``browser`` (a Chromium), each per
session and confined like a ``bash`` session.

Both run their programs inside the session's jail through its supervisor, as the
session's uid; the server only sends requests over the session's socket.

- :mod:`.vm`, :mod:`.vmtools` — the desktop backend and its mouse/keyboard/screen tools.
- :mod:`.x11`      — Xvfb and X clients inside the jail; screenshots come back base64.
- :mod:`.browser`  — the browser backend (URL checks on the server, actions in the jail).
- :mod:`.cdp`      — Playwright inside the supervisor, talking to Chromium over
  ``--remote-debugging-pipe``: there is no DevTools port for anyone to reach.
- :mod:`.chromium` — finding Chromium, and the flags it runs with in a jail.
"""
