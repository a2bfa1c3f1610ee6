"""Loopback servers for the demo, the tests and the benchmarks: SMTP with scripted replies and a
DNS server answering from zone data. They bind to 127.0.0.0/8 only."""
