"""Composition root of ECP: the ``ecp`` command line, settings and bootstrap."""

__all__: list[str] = []
