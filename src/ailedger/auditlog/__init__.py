"""ailedger.auditlog (see DESIGN.md)."""
