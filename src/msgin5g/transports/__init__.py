"""Wire adapters into the service layer; the only place errors become wire codes."""
