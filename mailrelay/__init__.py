"""mailrelay: send one email through the first of several providers that accepts it."""

__version__ = "0.1.0"
