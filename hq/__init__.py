"""HQ side of the protocol: store, ingest workers, downstream publisher, `edge-hq`."""
