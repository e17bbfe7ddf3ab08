//! Echo over loopback sockets under both adapters.
