"""The ways requests arrive (forward proxy, reverse listener) and the listeners' lifecycle."""
