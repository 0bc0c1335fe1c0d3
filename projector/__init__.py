"""Projector: builds the SQL read model from the event log."""
