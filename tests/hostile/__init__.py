"""Hostile input for ring3: a corpus of attacker-written requests and the invariants they must keep."""
