//! The stream caps: at most `STREAMS_PER_USER` open streams per user and
//! `MAX_STREAMS` in all, each place held by a [`StreamGuard`] for as long
//! as its stream is open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::domain::UserId;

/// Which stream limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// The user has `STREAMS_PER_USER` open already.
    #[error("too many open streams for this user")]
    PerUser,
    /// The instance has `MAX_STREAMS` open already.
    #[error("too many open streams on this instance")]
    Total,
}

/// The open streams, counted per user.
#[derive(Debug)]
pub(crate) struct StreamCaps {
    per_user: usize,
    total: usize,
    open: Mutex<HashMap<UserId, usize>>,
}

impl StreamCaps {
    /// None open yet; at most `per_user` per user and `total` in all.
    pub(crate) fn new(per_user: usize, total: usize) -> Self {
        Self {
            per_user,
            total,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<UserId, usize>> {
        // The map is a plain counter; a panic elsewhere cannot corrupt it.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one more stream for `user`, or says which limit is reached.
    ///
    /// # Errors
    /// [`StreamRefused`] when the user or the instance has too many.
    pub(crate) fn admit(self: &Arc<Self>, user: &UserId) -> Result<StreamGuard, StreamRefused> {
        {
            let mut open = self.lock();
            if open.values().sum::<usize>() >= self.total {
                return Err(StreamRefused::Total);
            }
            let mine = open.entry(user.clone()).or_default();
            if *mine >= self.per_user {
                return Err(StreamRefused::PerUser);
            }
            *mine += 1;
        }
        tracing::debug!(user = %user, "stream opened");
        Ok(StreamGuard {
            caps: Arc::clone(self),
            user: user.clone(),
        })
    }

    /// Streams open now.
    pub(crate) fn open(&self) -> usize {
        self.lock().values().sum()
    }

    fn release(&self, user: &UserId) {
        let mut open = self.lock();
        if let Some(n) = open.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                open.remove(user);
            }
        }
    }
}

/// Held by an open stream; releases its place when the stream ends.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    caps: Arc<StreamCaps>,
    user: UserId,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.caps.release(&self.user);
        tracing::debug!(user = %self.user, "stream closed");
    }
}
