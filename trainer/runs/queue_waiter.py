"""The waiter of one queued run: `python -m loradeck.trainer.runs.queue_waiter TICKET`.

Started by loradeck.trainer.runs.queue in a session of its own, so it outlives the TUI and the SSH login.
It asks `run_queue.step` every few seconds ($LORADECK_QUEUE_POLL, default 3) until the run has
started or its ticket is gone (cancelled), then exits. SIGTERM ends it and leaves the ticket: the
run then reads as queued-but-orphaned until `loradeck requeue` gives it a new waiter.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

from loradeck.trainer.runs import queue as run_queue


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m loradeck.trainer.runs.queue_waiter TICKET", file=sys.stderr)
        return 2
    ticket = Path(argv[0])
    poll = float(os.environ.get(run_queue.POLL_ENV) or run_queue.POLL_SECONDS)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the login that queued it may end
    print(f"queue waiter pid {os.getpid()} for {ticket.name}", flush=True)
    last_error = None
    while True:
        try:
            result = run_queue.step(ticket)
        except Exception as e:  # a bad moment (a file half-read, NVML hiccup): look again next time
            if repr(e) != last_error:  # once per distinct problem: a lasting one must not fill the log
                last_error = repr(e)
                traceback.print_exc()
            result = "waiting"
        if result != "waiting":
            print(f"queue waiter: {result}", flush=True)
            return 0
        time.sleep(poll)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
