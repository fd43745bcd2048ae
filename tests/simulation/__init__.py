"""Deterministic fault simulation: seeded payment lives on the time-skipping test server, checked
against the money invariants. See docs/simulation.md."""
