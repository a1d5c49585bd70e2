//! Change fan-out to UPDATE streams: the [`hub`] that logs changes and
//! wakes streams, and each [`stream`]'s dump and flush.

pub mod hub;
pub mod stream;

pub use hub::{Hub, Overflow, Subscription};
