//! The pipeline's errors. Each has a class, which the extension turns into an SQLSTATE, and
//! where it helps, a hint: the one place where errors get their user-facing shape.

use crate::ontology::ReadError;
use crate::wire::ErrorCode;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("unknown ontology \"{name}\"")]
    UnknownOntology { name: String, loaded: Vec<String> },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error(
        "ontology \"{ontology}\" was indexed with {model} ({dim} dimensions) but the model server's encoder has {server_dim}"
    )]
    EncoderMismatch { ontology: String, model: String, dim: usize, server_dim: usize },
    #[error("cannot load {what}: {error}")]
    Load { what: String, error: ReadError },
    #[error(transparent)]
    ModelServer(#[from] ModelServerError),
    /// Detection with dictionaries that the model server holds for every session.
    #[error("the mention dictionary of {ontologies} is above belink.max_dictionary_mb, so the model server holds it: {error}")]
    SharedDictionary { ontologies: String, error: ModelServerError },
}

/// Failures of a request to the model server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelServerError {
    #[error("the belink model server is not running: belink is not in shared_preload_libraries")]
    NotPreloaded,
    #[error("the belink model server is not running (waited {waited_ms} ms)")]
    NotRunning { waited_ms: u128 },
    #[error("the belink model server did not answer within {waited_ms} ms")]
    TimedOut { waited_ms: u128 },
    #[error("lost the connection to the belink model server: {0}")]
    Lost(String),
    #[error("belink model server: {0}")]
    ModelUnavailable(String),
    #[error("belink model server ({code:?}): {message}")]
    Failed { code: ErrorCode, message: String },
    #[error("unexpected reply from the model server: {0}")]
    BadReply(String),
}

/// What kind of failure an error is; the extension maps each to one SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidParameter,
    UndefinedObject,
    NotInPrerequisiteState,
    ProgramLimitExceeded,
    BadFileFormat,
    UndefinedFile,
    InsufficientPrivilege,
    Io,
    ConnectionFailure,
    ExternalRoutine,
    Internal,
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::UnknownOntology { .. } => ErrorClass::UndefinedObject,
            Error::InvalidArgument(_) => ErrorClass::InvalidParameter,
            Error::LimitExceeded(_) => ErrorClass::ProgramLimitExceeded,
            Error::EncoderMismatch { .. } => ErrorClass::NotInPrerequisiteState,
            Error::Load { error, .. } => match error {
                ReadError::Syntax { .. } | ReadError::Invalid(_) => ErrorClass::BadFileFormat,
                ReadError::NotFound(_) => ErrorClass::UndefinedFile,
                ReadError::PermissionDenied(_) => ErrorClass::InsufficientPrivilege,
                ReadError::Io(_) => ErrorClass::Io,
            },
            Error::SharedDictionary { error, .. } => Error::ModelServer(error.clone()).class(),
            Error::ModelServer(e) => match e {
                ModelServerError::NotPreloaded | ModelServerError::ModelUnavailable(_) => {
                    ErrorClass::NotInPrerequisiteState
                }
                ModelServerError::NotRunning { .. } | ModelServerError::TimedOut { .. } | ModelServerError::Lost(_) => {
                    ErrorClass::ConnectionFailure
                }
                ModelServerError::Failed { .. } => ErrorClass::ExternalRoutine,
                ModelServerError::BadReply(_) => ErrorClass::Internal,
            },
        }
    }

    /// The message: a missing file or a permission problem is its own message; other load
    /// errors name what was being loaded.
    pub fn message(&self) -> String {
        match self {
            Error::Load {
                error: ReadError::NotFound(m) | ReadError::PermissionDenied(m) | ReadError::Io(m), ..
            } => m.clone(),
            other => other.to_string(),
        }
    }

    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::UnknownOntology { loaded, .. } if loaded.is_empty() => {
                "No ontology is loaded yet: load one with belink_load_ontology(name, path).".to_string()
            }
            Error::UnknownOntology { loaded, .. } => format!("Loaded ontologies: {}.", loaded.join(", ")),
            Error::EncoderMismatch { ontology, .. } => {
                format!("Run CALL belink_index('{ontology}') to re-embed its names, or SET belink.retrieval = 'lexical'.")
            }
            Error::SharedDictionary { error, .. } => {
                let server = Error::ModelServer(error.clone()).hint().map(|h| h + " ").unwrap_or_default();
                format!("{server}Or raise belink.max_dictionary_mb (superusers and roles granted SET on it) for each session to build its own.")
            }
            Error::ModelServer(e) => match e {
                ModelServerError::NotPreloaded => {
                    "Add belink to shared_preload_libraries in postgresql.conf and restart PostgreSQL."
                }
                ModelServerError::NotRunning { .. } => {
                    "Its supervisor starts it when the cluster starts and restarts it when it dies; see belink_worker_status() and the PostgreSQL log."
                }
                ModelServerError::TimedOut { .. } => {
                    "Raise belink.request_timeout for large requests, or see belink_worker_status() and the server log."
                }
                ModelServerError::Lost(_) => {
                    "The server stopped or crashed; its supervisor restarts it. Retry the statement; the PostgreSQL log has the server's messages."
                }
                ModelServerError::ModelUnavailable(_) => {
                    "Check belink.encoder_model and belink.reranker_model (`make install` installs the defaults), then SELECT pg_reload_conf()."
                }
                ModelServerError::Failed { .. } | ModelServerError::BadReply(_) => return None,
            }
            .to_string(),
            _ => return None,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
