//! Everything HTTP. Nothing below this layer names axum, hyper or tower;
//! this layer turns their outcomes into the contract's answers.
//!
//! The direction inside: `routes/` are leaves that import from the files
//! beside them, never from each other; the files beside them never import a
//! route (`tests/api/layers.rs` checks both).
//!
//! - [`state`]: the [`AppState`](state::AppState) every handler shares.
//! - [`error`]: the API's one error type and its JSON body.
//! - [`extract`]: who is calling, query and path parameters, JSON bodies.
//! - [`deadline`]: every store call bounded in time, timed and counted.
//! - [`visibility`]: who may read presence (`PRESENCE_VISIBILITY`).
//! - [`bodies`]: the response bodies a route and a stream both send.
//! - [`pages`]: the headers and assets of the pages for browsers.
//! - [`openapi`]: the document's header and its rendering.
//! - [`server`]: the HTTP/1.1 loop and the limits on each client.
//! - [`edge`]: around the router: request ids, body limits, load shedding,
//!   the request timeout, panics, the per-request log.
//! - [`track`]: the route metrics, labelled by matched route.
//! - [`sse`]: the event streams: caps, keep-alive, token lifetime, the
//!   counts publisher and the presence feed.
//! - [`routes`]: the API, one file per endpoint group, and its OpenAPI.

pub mod bodies;
pub mod deadline;
pub mod edge;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod pages;
pub mod routes;
pub mod server;
pub mod sse;
pub mod state;
pub mod track;
pub mod visibility;
