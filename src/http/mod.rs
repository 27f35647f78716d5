//! Everything HTTP: the state handlers share, the API's error type, the
//! extractors, the server loop with its limits, the live streams, and the
//! routes. Nothing below this layer names axum, hyper or tower; this layer
//! turns their outcomes into the contract's answers.

pub mod edge;
pub mod error;
pub mod extract;
pub mod live;
pub mod routes;
pub mod server;
pub mod state;
