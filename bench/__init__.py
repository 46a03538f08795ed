"""Benchmarks of mailrelay against the floor and its peers; run with `python -m bench`."""
