//! What each endpoint's deliverer reports about itself (its claim, its
//! last delivery and failure; the backlog is the outbox's, counted when
//! asked), for `GET /api/admin/webhooks` and the dashboard: a
//! [`StatusBoard`] that the deliverers write and the HTTP layer reads,
//! never holding its lock across an `.await`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use crate::clock::Millis;
use crate::config::WebhookEndpoint;

/// One endpoint, as an operator sees it: never its secret nor the
/// credentials of its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// The URL without credentials.
    pub url: String,
    /// Whether this instance delivers to it now (holds its claim); with
    /// several instances on one Redis, one of them does.
    pub delivering: bool,
    /// When a batch was last delivered by this instance.
    pub last_delivery_at: Option<Millis>,
    /// The last failed attempt of this instance.
    pub last_failure: Option<Failure>,
}

/// A failed delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// When.
    pub at: Millis,
    /// The answer's status, when there was one.
    pub status: Option<u16>,
    /// What went wrong: `HTTP 503`, `timed out`, `connection refused`...
    pub error: String,
}

/// The status of every endpoint, shared between the deliverers and
/// readers; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<[Arc<EndpointStatus>]>);

impl StatusBoard {
    /// A board for `endpoints`, with nothing known yet.
    pub fn new(endpoints: &[WebhookEndpoint]) -> Self {
        Self(
            endpoints
                .iter()
                .map(|e| {
                    Arc::new(EndpointStatus {
                        key: e.key.clone(),
                        status: Mutex::new(WebhookStatus {
                            url: e.display.clone(),
                            ..WebhookStatus::default()
                        }),
                    })
                })
                .collect(),
        )
    }

    /// Every endpoint's status now, in `WEBHOOK_URL` order.
    pub fn snapshot(&self) -> Vec<WebhookStatus> {
        self.0.iter().map(|e| e.lock().clone()).collect()
    }

    /// The status that the deliverer of `key` writes, if there is one.
    pub fn endpoint(&self, key: &str) -> Option<Arc<EndpointStatus>> {
        self.0.iter().find(|e| e.key == key).cloned()
    }
}

/// One endpoint's status, written by its deliverer.
#[derive(Debug, Default)]
pub struct EndpointStatus {
    key: String,
    status: Mutex<WebhookStatus>,
}

impl EndpointStatus {
    /// A status of its own, for a deliverer run alone (tests, tools).
    pub fn detached(endpoint: &WebhookEndpoint) -> Arc<Self> {
        StatusBoard::new(std::slice::from_ref(endpoint)).0[0].clone()
    }

    /// The status now.
    pub fn get(&self) -> WebhookStatus {
        self.lock().clone()
    }

    /// Never held across `.await`: every writer sets a field and lets go.
    fn lock(&self) -> MutexGuard<'_, WebhookStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn set_delivering(&self, delivering: bool) {
        self.lock().delivering = delivering;
    }

    pub(super) fn delivered(&self, at: Millis) {
        self.lock().last_delivery_at = Some(at);
    }

    pub(super) fn failed(&self, failure: Failure) {
        self.lock().last_failure = Some(failure);
    }
}
