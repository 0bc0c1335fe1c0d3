"""Imported last by the fork server that worker processes are forked from (see `processes`).

The fork server imported the user's modules, which may register `atexit` hooks meant for the
application process, such as seed 001's `cancel_pending` cleanup. The fork server ends with
`SystemExit` when the application exits, which would run them once more; its forked workers
skip them anyway (they end with `os._exit`). Importing this module drops them.
"""

import atexit

atexit._clear()
