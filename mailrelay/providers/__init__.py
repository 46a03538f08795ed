"""Provider adapters. Import them through `mailrelay.providers.registry`, never directly."""
