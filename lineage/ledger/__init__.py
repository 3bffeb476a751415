"""lineage/ledger."""

__all__: list[str] = []
