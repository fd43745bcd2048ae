"""Free TCP ports for processes a test starts itself (they bind after the test picked the port).

The kernel's own free-port pick (bind to port 0) comes from the ephemeral range, which is also
where every outgoing connection gets its local port: between the pick and the child's bind, a
client connection of any process may take it. Ports below the ephemeral range are never handed
out that way, so a port found free there stays free unless someone binds it on purpose.
"""

from __future__ import annotations

import random
import socket

# Below Linux's default ephemeral range (32768-60999) and above the well-known services'.
LOW, HIGH = 20000, 32000


def free_port() -> int:
    for _ in range(200):
        port = random.randint(LOW, HIGH)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {LOW} and {HIGH} after 200 tries")
