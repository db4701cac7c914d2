//! Import stage: telemetry nobody recorded becomes a normal session, so `analyze`,
//! `timeline`, `doctor`, `export` and the dashboard's definitions apply unchanged.
//! [`prometheus`] reads Prometheus history through its query API and replays it through
//! the recorder's pipeline; [`vllm_log`] turns vLLM's periodic stats log lines into a
//! coarse session; [`gpu`] joins an `nvidia-smi` log into a session.

pub mod gpu;
pub mod profilemate;
pub mod prometheus;
pub mod vllm_log;

/// Errors of an import. Each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Prometheus(crate::source::promapi::PromApiError),
    #[error("{0}")]
    Empty(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(crate::store::StoreError),
}

impl From<crate::source::promapi::PromApiError> for ImportError {
    fn from(e: crate::source::promapi::PromApiError) -> Self {
        ImportError::Prometheus(e)
    }
}

impl From<crate::store::StoreError> for ImportError {
    fn from(e: crate::store::StoreError) -> Self {
        ImportError::Store(e)
    }
}
