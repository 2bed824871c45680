//! The conformance suite every `Store` backend must pass.
