"""ailedger.service (see DESIGN.md)."""
