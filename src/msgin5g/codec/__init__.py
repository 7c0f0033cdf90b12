"""Sans-I/O codecs: bytes ↔ model. No asyncio, sockets, clocks, logging or globals."""
