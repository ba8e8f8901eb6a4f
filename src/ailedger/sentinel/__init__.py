"""ailedger.sentinel (see DESIGN.md)."""
