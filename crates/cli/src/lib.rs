//! The `leadline` binary's library half: configuration and the commands,
//! kept out of `main.rs` so tests can drive them.

pub mod audit;
pub mod compose;
pub mod config;
pub mod export;
pub mod import;
pub mod keys;
pub mod privacy;
pub mod run;
pub mod users;

pub use compose::{ComposeError, Composition, compose, compose_with};
