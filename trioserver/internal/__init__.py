"""Internal HTTP between the instances of one deployment (issue 13).

A worker forwards the writes it cannot make itself to main (`forwarding`, `client`); main
answers them, and the other internal requests, on its internal listener (`app`, `serve`).
"""
