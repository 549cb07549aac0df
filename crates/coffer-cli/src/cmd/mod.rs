//! One module per `coffer` subcommand.

pub mod server;
