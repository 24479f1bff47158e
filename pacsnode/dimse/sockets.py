"""Socket options set on every association, inbound and outbound."""
import socket

from pynetdicom import evt


def set_nodelay(event: evt.Event) -> None:
    """Without TCP_NODELAY every small PDU waits ~40 ms for a delayed ACK on loopback."""
    transport = event.assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
