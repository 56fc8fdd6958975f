//! How the node's typed errors become client-facing error bodies (codes; the HTTP status for
//! each code is chosen in `hearth-client-api`'s `rejection.rs`). Internal failures are logged
//! here and reported without detail.

use hearth_spec::{ErrorBody, ErrorCode};

use crate::accounts::AccountError;
use crate::accounts::token::TokenError;
use crate::chat::committer::CommitError;
use crate::chat::sequencer::SequenceError;
use crate::store::StoreError;

fn internal(detail: &dyn std::fmt::Display) -> ErrorBody {
    tracing::error!(error = %detail, "internal error");
    ErrorBody::new(
        ErrorCode::Internal,
        "the hearth failed to do that; nothing was changed",
    )
}

/// Storage refuses writes for now (see `StoreError::Unavailable`).
fn unavailable(why: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Unavailable,
        format!("{why}; nothing was written, try again later"),
    )
}

impl From<AccountError> for ErrorBody {
    fn from(e: AccountError) -> Self {
        let code = match &e {
            AccountError::InvalidUsername(_)
            | AccountError::ForeignUser(_)
            | AccountError::PasswordTooShort(_)
            | AccountError::PasswordTooLong
            | AccountError::DeviceNameTooLong => ErrorCode::InvalidParam,
            AccountError::UserExists => ErrorCode::UserExists,
            AccountError::BadCredentials => ErrorCode::BadCredentials,
            AccountError::Deactivated
            | AccountError::RegistrationClosed
            | AccountError::RegistrationTokenRequired
            | AccountError::RegistrationTokenRefused => ErrorCode::Forbidden,
            AccountError::BadRefreshToken | AccountError::Revoked => ErrorCode::Unauthorized,
            AccountError::Token(TokenError::Expired) => ErrorCode::TokenExpired,
            AccountError::Token(_) => ErrorCode::Unauthorized,
            AccountError::DeviceNotFound | AccountError::UserNotFound => ErrorCode::NotFound,
            AccountError::Busy { retry_after_ms } => {
                let mut body = ErrorBody::new(ErrorCode::RateLimited, e.to_string());
                body.retry_after_ms = Some(*retry_after_ms);
                return body;
            }
            AccountError::Store(StoreError::Unavailable(why)) => return unavailable(why),
            AccountError::Store(_) | AccountError::Hash(_) | AccountError::Params(_) => {
                return internal(&e);
            }
        };
        ErrorBody::new(code, e.to_string())
    }
}

impl From<CommitError> for ErrorBody {
    fn from(e: CommitError) -> Self {
        let code = match &e {
            CommitError::Refused(refused) => match refused {
                SequenceError::RoomNotFound(_) => ErrorCode::NotFound,
                SequenceError::NotMember(_)
                | SequenceError::DirectRoomInvite
                | SequenceError::DirectRoomRemove
                | SequenceError::NotAdmin { .. }
                | SequenceError::LastAdmin
                | SequenceError::DirectRoomAdmin
                | SequenceError::RoomClosed(_) => ErrorCode::Forbidden,
                SequenceError::RoomFull(_) => ErrorCode::LimitExceeded,
                SequenceError::InvalidDirect
                | SequenceError::AlreadyMember(_)
                | SequenceError::NotInRoom(_)
                | SequenceError::AlreadyAdmin(_)
                | SequenceError::NotAnAdmin(_)
                | SequenceError::NameTooLong
                | SequenceError::SeqOutOfRange { .. }
                | SequenceError::CursorOutOfRange { .. } => ErrorCode::InvalidParam,
                SequenceError::NotHome(_) | SequenceError::BadEvent(_) => ErrorCode::InvalidParam,
                SequenceError::StaleEpoch { .. } => ErrorCode::StaleEpoch,
                SequenceError::RoomExists(_) | SequenceError::OutOfOrder { .. } => {
                    return internal(&e);
                }
            },
            CommitError::Storage(_) => return internal(&e),
            CommitError::Closed | CommitError::Unavailable(_) => ErrorCode::Unavailable,
        };
        ErrorBody::new(code, e.to_string())
    }
}

impl From<StoreError> for ErrorBody {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(why) => unavailable(why),
            // Listed, so that a new kind of failure is placed here on purpose.
            StoreError::Db(_)
            | StoreError::Decode(_)
            | StoreError::Envelope(_)
            | StoreError::Corrupt(_)
            | StoreError::Journal(_) => internal(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_spec::RoomId;

    fn code(e: impl Into<ErrorBody>) -> ErrorCode {
        e.into().code
    }

    /// Codes a client can only meet when something fails inside the hearth (a dead committer, a
    /// storage error), so no end-to-end test reaches all of them.
    #[test]
    fn failures_inside_the_hearth_map_to_internal_or_unavailable() {
        let room = RoomId::parse("!r:localhost").unwrap();
        assert_eq!(code(CommitError::Closed), ErrorCode::Unavailable);
        assert_eq!(
            code(CommitError::Unavailable("disk")),
            ErrorCode::Unavailable
        );
        assert_eq!(
            code(CommitError::Storage(std::sync::Arc::new(
                StoreError::Corrupt("eio".into())
            ))),
            ErrorCode::Internal
        );
        assert_eq!(
            code(CommitError::Refused(SequenceError::RoomExists(
                room.clone()
            ))),
            ErrorCode::Internal
        );
        assert_eq!(
            code(CommitError::Refused(SequenceError::OutOfOrder {
                seq: 2,
                expected: 1
            })),
            ErrorCode::Internal
        );
        assert_eq!(
            code(StoreError::Unavailable("reopening")),
            ErrorCode::Unavailable
        );
        assert_eq!(code(StoreError::Corrupt("x".into())), ErrorCode::Internal);
        assert_eq!(
            code(AccountError::Store(StoreError::Unavailable("reopening"))),
            ErrorCode::Unavailable
        );
        let body = ErrorBody::from(AccountError::Busy {
            retry_after_ms: 250,
        });
        assert_eq!(
            (body.code, body.retry_after_ms),
            (ErrorCode::RateLimited, Some(250))
        );
        // Refusals a client provokes keep their own codes.
        assert_eq!(
            code(CommitError::Refused(SequenceError::NotMember(room))),
            ErrorCode::Forbidden
        );
        assert_eq!(
            code(CommitError::Refused(SequenceError::RoomFull(3))),
            ErrorCode::LimitExceeded
        );
    }
}
