//! The JSON commands of `proto/modelops/query/v1/FLIGHT_COMMANDS.md`. They are typed and parsed
//! in [`modelops_core::flight_command`], where the fuzz targets reach them without DataFusion;
//! this module re-exports them and makes their errors the service's `InvalidArgument`.

pub use modelops_core::flight_command::{Command, CommandError, LossesQuery, MAX_BEST, Order, StatusFilter};

use crate::error::QueryError;

impl From<CommandError> for QueryError {
    fn from(error: CommandError) -> Self {
        Self::InvalidArgument {
            field: error.field,
            message: error.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_command_is_an_invalid_argument_naming_the_field() {
        match Command::parse::<QueryError>(br#"{"type":"losses","min_loss":"low"}"#) {
            Err(QueryError::InvalidArgument { field, .. }) => assert_eq!(field, "min_loss"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        let status = tonic::Status::from(Command::parse::<QueryError>(b"not json").unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
