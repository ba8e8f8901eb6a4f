"""ailedger.provenance (see DESIGN.md)."""
