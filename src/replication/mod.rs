//! Change fan-out to UPDATE streams.

pub mod hub;

pub use hub::{Hub, Overflow, Subscription};
