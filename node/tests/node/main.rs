//! End-to-end tests of `medley-node` processes on 127.0.0.1 over real QUIC.

mod data_plane;
mod operator;
mod support;
mod tracker_key;
