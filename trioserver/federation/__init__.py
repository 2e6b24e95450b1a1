"""The Server-Server API (issue 15): keys, request authentication, transport, the sender and
the inbound endpoints. Everything a remote server sends is untrusted input."""
