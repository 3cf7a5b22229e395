"""Runtime shared by every job: session, configs, tensor codec, chunking, quarantine, outputs, manifests."""
