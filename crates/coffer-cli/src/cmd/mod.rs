//! One module per `coffer` subcommand (or pair of twin subcommands).

pub mod account;
pub mod common;
pub mod conflicts;
pub mod login;
pub mod pause;
pub mod selective;
pub mod server;
pub mod signup;
pub mod status;
pub mod sync;
pub mod trash;
pub mod ui;
pub mod up;
pub mod versions;
