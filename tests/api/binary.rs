//! The built binary itself: demo mode, config errors, graceful shutdown.
