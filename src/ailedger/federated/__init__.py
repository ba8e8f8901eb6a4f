"""ailedger.federated (see DESIGN.md)."""
