//! Why an engine could not serve a request, or stopped serving it. The engines know nothing of HTTP:
//! `api::error` answers each case in OpenAI's shape.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The queue is full; a retry after a short wait may be taken.
    #[error("the queue is full")]
    QueueFull,
    /// The worker is gone: it shut down, or a panic outside a step ended it.
    #[error("its engine stopped")]
    Stopped,
    /// The request can never run on this replica: it needs more KV cache than the whole pool.
    #[error("{0}")]
    TooLarge(String),
    /// The grammar the request asked for cannot be enforced; the message names the construct.
    #[error("{0}")]
    Unenforceable(String),
    /// A step failed (a forward's error, a panic, the grammar engine's error); the message says which.
    #[error("{0}")]
    Failed(String),
}
