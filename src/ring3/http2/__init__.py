"""HTTP/2 (RFC 9113): a sans-IO protocol core (frames and HPACK, bytes in, events out) and the connection
that runs its streams as exchanges. Imported only when a client speaks HTTP/2."""
