"""msgspec Structs for the wire formats the proxy decodes."""
