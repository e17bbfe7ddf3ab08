//! Echo under the deterministic simulator.
