//! The tracker over real HTTP on 127.0.0.1 with its RocksDB state on disk.

mod admission;
mod api;
mod docs;
mod failover;
mod hostile;
mod process;
mod replicas;
mod search;
mod signed;
mod support;
