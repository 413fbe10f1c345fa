//! Tern's HTTP device bridge.
