//! The control thread: loads and reloads configuration, handles signals, routes
//! cancel requests between cores, and drives shutdown. It never touches a client
//! or server socket; it talks to cores only through `msg` over crossbeam channels.

pub mod health;
pub mod msg;
pub mod probe;
pub mod resolve;
pub mod run;
pub mod snapshot;

pub use run::{run, Options};
