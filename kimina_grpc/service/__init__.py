"""The service room: proto <-> domain, status codes, and the process lifecycle."""
