//! Coroutines: the async layer on tokio.
