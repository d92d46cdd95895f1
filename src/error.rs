//! Turning failures into PostgreSQL errors a user can act on: an SQLSTATE and a message that
//! names the file, line, argument or setting involved. The core's typed errors get their
//! SQLSTATE and hint here, in [`raise_error`].

use belink_core::error::{Error, ErrorClass};
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

fn sqlstate(class: ErrorClass) -> PgSqlErrorCode {
    match class {
        ErrorClass::InvalidParameter => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorClass::UndefinedObject => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        ErrorClass::NotInPrerequisiteState => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        ErrorClass::ProgramLimitExceeded => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        ErrorClass::BadFileFormat => PgSqlErrorCode::ERRCODE_BAD_COPY_FILE_FORMAT,
        ErrorClass::UndefinedFile => PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
        ErrorClass::InsufficientPrivilege => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        ErrorClass::Io => PgSqlErrorCode::ERRCODE_IO_ERROR,
        ErrorClass::ConnectionFailure => PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
        ErrorClass::ExternalRoutine => PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
        ErrorClass::Internal => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
    }
}

/// Raises a core error with its SQLSTATE and hint.
pub fn raise_error(error: Error) -> ! {
    let code = sqlstate(error.class());
    match error.hint() {
        Some(hint) => raise_with_hint(code, error.message(), hint),
        None => raise(code, error.message()),
    }
}

/// An ontology that could not be read from `what` (a path, or "the given content").
pub fn raise_ontology_error(what: &str, error: ReadError) -> ! {
    raise_error(Error::Load { what: what.to_string(), error })
}

/// Unwraps results: a core error is raised as its SQLSTATE; an SPI failure is a bug in
/// BeLink's SQL, not a user error.
pub trait OrRaise<T> {
    fn or_raise(self, context: &str) -> T;
}

impl<T> OrRaise<T> for Result<T, pgrx::spi::SpiError> {
    fn or_raise(self, context: &str) -> T {
        self.unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("belink: {context}: {e}")))
    }
}

/// Unwraps a core result (or a model-server one), raising its error.
pub trait OrRaiseError<T> {
    fn or_raise_error(self) -> T;
}

impl<T, E: Into<Error>> OrRaiseError<T> for Result<T, E> {
    fn or_raise_error(self) -> T {
        self.unwrap_or_else(|e| raise_error(e.into()))
    }
}
