"""make run's mail server: an SMTP server on loopback that keeps every message it is sent in an mbox file.

    python scripts/smtp_sink.py --port 8025 --mbox var/mail/inbox.mbox

The notifications of `make run`'s requests (workflows/outbox/notify.py) are mailed here; read them with
`less var/mail/inbox.mbox` or any mail reader (`mutt -f var/mail/inbox.mbox`). Nothing is relayed anywhere.
"""

from __future__ import annotations

import argparse
import logging
import mailbox
import signal
import threading
from email import message_from_bytes
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

logger = logging.getLogger("smtp_sink")


class MboxHandler:
    """Appends each message to the mbox, as it arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        with self.lock:
            box = mailbox.mbox(str(self.path))
            try:
                box.lock()
                box.add(message)
                box.flush()
            finally:
                box.unlock()
                box.close()
        logger.info("%r to %s", message["Subject"], ", ".join(envelope.rcpt_tos))
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--mbox", type=Path, default=Path("var/mail/inbox.mbox"))
    args = parser.parse_args()
    # The service's line format (emgapi/log_format.py, TEXT_FORMAT), which this script cannot import.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    args.mbox.parent.mkdir(parents=True, exist_ok=True)
    controller = Controller(MboxHandler(args.mbox), hostname=args.host, port=args.port)
    controller.start()
    logger.info("Listening on %s:%s, keeping mail in %s", args.host, args.port, args.mbox)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    controller.stop()


if __name__ == "__main__":
    main()
