"""HTTP API: REST reads of the read model and SSE feeds of the event log."""
