"""Schema versions of the connection store, oldest first; each frozen once released."""
