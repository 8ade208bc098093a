"""Transports: how bytes cross the socket. Plain sockets are the output path itself (ring3.output);
TLS lives here, imported only when a listener is marked tls."""
