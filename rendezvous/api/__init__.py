"""The HTTP API of the rendezvous server: ``/v1`` JSON routes, health, errors."""
