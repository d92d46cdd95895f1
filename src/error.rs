//! Turning failures into PostgreSQL errors a user can act on: an SQLSTATE and a message that
//! names the file, line, argument or setting involved.

use belink_core::ontology::ReadError;
use pgrx::pg_sys::elog::PgLogLevel;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// Raises an ERROR (aborting the statement and its transaction).
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "belink").report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

/// Raises an ERROR with a hint line.
pub fn raise_with_hint(code: PgSqlErrorCode, message: impl Into<String>, hint: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "belink").set_hint(hint).report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

/// An ontology that could not be read from `source` (a path, or "the given text").
pub fn raise_ontology_error(source: &str, error: ReadError) -> ! {
    match error {
        ReadError::Syntax { line, message } => {
            raise(PgSqlErrorCode::ERRCODE_BAD_COPY_FILE_FORMAT, format!("cannot load {source}: line {line}: {message}"))
        }
        ReadError::Invalid(message) => {
            raise(PgSqlErrorCode::ERRCODE_BAD_COPY_FILE_FORMAT, format!("cannot load {source}: {message}"))
        }
        ReadError::NotFound(message) => raise(PgSqlErrorCode::ERRCODE_UNDEFINED_FILE, message),
        ReadError::PermissionDenied(message) => raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, message),
        ReadError::Io(message) => raise(PgSqlErrorCode::ERRCODE_IO_ERROR, message),
    }
}

/// Unwraps SPI results: an SPI failure here is a bug in BeLink's SQL, not a user error.
pub trait OrRaise<T> {
    fn or_raise(self, context: &str) -> T;
}

impl<T> OrRaise<T> for Result<T, pgrx::spi::SpiError> {
    fn or_raise(self, context: &str) -> T {
        self.unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("belink: {context}: {e}")))
    }
}
