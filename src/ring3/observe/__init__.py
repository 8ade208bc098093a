"""Observation: the access log and the cost ledger."""
