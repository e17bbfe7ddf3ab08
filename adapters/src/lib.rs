//! Drives switchyard-core machines over real sockets, on smol or async-std.
