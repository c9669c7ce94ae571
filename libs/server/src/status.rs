//! The one map from what went wrong to a gRPC status. Every service answers through it, so a
//! caller sees the same code for the same kind of failure, and a rejected transaction carries its
//! typed reason ([`TxRejection`]) in the status details instead of only in text.

use std::fmt::Display;

use prost::Message as _;
use tonic::{Code, Status};
use verity_proto::v1::{self, TxRejection};

/// The gRPC code of a rejection.
pub fn rejection_code(rejection: TxRejection) -> Code {
    match rejection {
        TxRejection::None => Code::Ok,
        TxRejection::Invalid => Code::InvalidArgument,
        TxRejection::AlreadyKnown => Code::AlreadyExists,
        TxRejection::PoolFull | TxRejection::Underpriced => Code::ResourceExhausted,
        TxRejection::NonceTooLow
        | TxRejection::NonceTooHigh
        | TxRejection::ReplacementUnderpriced
        | TxRejection::InsufficientFunds => Code::FailedPrecondition,
        TxRejection::Unavailable => Code::Unavailable,
        TxRejection::Internal => Code::Internal,
    }
}

/// A rejected transaction as a status: the rejection's code, geth's message, and a
/// [`v1::SubmitError`] in the details.
pub fn rejected(rejection: TxRejection, message: impl Into<String>) -> Status {
    let message = message.into();
    let details = v1::SubmitError {
        message: message.clone(),
        rejection: rejection as i32,
    }
    .encode_to_vec();
    Status::with_details(rejection_code(rejection), message, details.into())
}

/// The typed reason a status from [`rejected`] carries; `None` for any other status (one from a
/// proxy, a timeout, an older peer).
pub fn rejection_of(status: &Status) -> Option<TxRejection> {
    let error = v1::SubmitError::decode(status.details()).ok()?;
    match TxRejection::try_from(error.rejection) {
        Ok(TxRejection::None) | Err(_) => None,
        Ok(rejection) => Some(rejection),
    }
}

/// A storage failure: the service's fault, never the caller's.
pub fn storage(error: impl Display) -> Status {
    Status::internal(format!("storage: {error}"))
}

/// A request that does not decode or breaks a rule of the API.
pub fn invalid(error: impl Display) -> Status {
    Status::invalid_argument(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_travels_typed_in_the_status_details() {
        let status = rejected(
            TxRejection::NonceTooLow,
            "nonce too low: address 0x.., tx: 0 state: 1",
        );
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "nonce too low: address 0x.., tx: 0 state: 1"
        );
        assert_eq!(rejection_of(&status), Some(TxRejection::NonceTooLow));
    }

    #[test]
    fn a_status_without_details_has_no_rejection() {
        assert_eq!(rejection_of(&Status::unavailable("no route")), None);
        assert_eq!(
            rejection_of(&Status::with_details(
                Code::Internal,
                "x",
                vec![0xff, 0xff].into()
            )),
            None
        );
    }

    #[test]
    fn every_rejection_but_none_maps_to_an_error_code() {
        for value in 1..=10 {
            let rejection = TxRejection::try_from(value).expect("a defined rejection");
            assert_ne!(rejection_code(rejection), Code::Ok, "{rejection:?}");
        }
    }
}
