//! The `leadline` binary's library half: configuration and the commands,
//! kept out of `main.rs` so tests can drive them.

pub mod config;
pub mod run;
