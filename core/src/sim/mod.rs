//! The deterministic network simulator.
