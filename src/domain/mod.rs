//! Pure types and rules of the Send API, with no IO: roles and sender rules,
//! the send request as parsed at the edge, attempt statuses and their
//! forward-only transitions, the idempotency fingerprint, tokens.

pub mod error_code;
pub mod phone;
pub mod request;
pub mod token;

pub use error_code::ErrorCode;
pub use phone::{Phone, PhoneError};
pub use request::{FieldError, Message, SendRequest};

use std::fmt;

/// A user's role in its workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// The page's sender rules: only owners and admins may pick `from`
    /// (workspace sender mode) and read the workspace's such attempts.
    pub fn may_choose_sender(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// Which of the page's two sender modes a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderMode {
    /// `to` only: the account attached to the token's user.
    Personal,
    /// `from` + `to`: any connected account of the workspace (owner/admin).
    Workspace,
}

impl SenderMode {
    pub fn parse(s: &str) -> Option<SenderMode> {
        match s {
            "personal" => Some(SenderMode::Personal),
            "workspace" => Some(SenderMode::Workspace),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SenderMode::Personal => "personal",
            SenderMode::Workspace => "workspace",
        }
    }
}

/// The WhatsApp driver an account uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    Sandbox,
    Cloud,
    Web,
}

impl DriverKind {
    pub fn parse(s: &str) -> Option<DriverKind> {
        match s {
            "sandbox" => Some(DriverKind::Sandbox),
            "cloud" => Some(DriverKind::Cloud),
            "web" => Some(DriverKind::Web),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Sandbox => "sandbox",
            DriverKind::Cloud => "cloud",
            DriverKind::Web => "web",
        }
    }
}

/// An account's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Connected,
    /// Pairing or reconnecting; sends wait (within the offline grace).
    Connecting,
    /// Offline; queued sends wait, then fail after the offline grace.
    Disconnected,
    /// The linked session ended for good; needs pairing again.
    LoggedOut,
    /// Temporarily banned by WhatsApp; sends are held until it lifts.
    Banned,
}

impl AccountStatus {
    pub fn parse(s: &str) -> Option<AccountStatus> {
        match s {
            "connected" => Some(AccountStatus::Connected),
            "connecting" => Some(AccountStatus::Connecting),
            "disconnected" => Some(AccountStatus::Disconnected),
            "logged_out" => Some(AccountStatus::LoggedOut),
            "banned" => Some(AccountStatus::Banned),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Connected => "connected",
            AccountStatus::Connecting => "connecting",
            AccountStatus::Disconnected => "disconnected",
            AccountStatus::LoggedOut => "logged_out",
            AccountStatus::Banned => "banned",
        }
    }
}

/// A send attempt's status. Order matters: a status never moves backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttemptStatus {
    Queued,
    Sending,
    Accepted,
    Delivered,
    Read,
    Failed,
}

impl AttemptStatus {
    pub const ALL: [AttemptStatus; 6] = [
        AttemptStatus::Queued,
        AttemptStatus::Sending,
        AttemptStatus::Accepted,
        AttemptStatus::Delivered,
        AttemptStatus::Read,
        AttemptStatus::Failed,
    ];

    pub fn parse(s: &str) -> Option<AttemptStatus> {
        AttemptStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Queued => "queued",
            AttemptStatus::Sending => "sending",
            AttemptStatus::Accepted => "accepted",
            AttemptStatus::Delivered => "delivered",
            AttemptStatus::Read => "read",
            AttemptStatus::Failed => "failed",
        }
    }

    /// Whether `self -> next` moves forward. `failed` is terminal and can be
    /// reached from anything before `delivered` (WhatsApp may report a failure
    /// after accepting); a delivered or read message cannot fail any more.
    pub fn can_move_to(self, next: AttemptStatus) -> bool {
        match next {
            AttemptStatus::Failed => self < AttemptStatus::Delivered,
            _ => self != AttemptStatus::Failed && next > self,
        }
    }

    /// The statuses from which `next` may be reached, for SQL `IN (...)`.
    pub fn predecessors(next: AttemptStatus) -> Vec<AttemptStatus> {
        AttemptStatus::ALL
            .into_iter()
            .filter(|s| s.can_move_to(next))
            .collect()
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AttemptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Final error codes reported on a failed attempt, as stored and shown.
pub mod error_codes {
    use super::ErrorCode;
    pub const RECIPIENT_NOT_FOUND: &str = ErrorCode::RecipientNotFound.as_str();
    pub const WHATSAPP_NOT_CONNECTED: &str = ErrorCode::WhatsappNotConnected.as_str();
    pub const SEND_FAILED: &str = ErrorCode::SendFailed.as_str();
    pub const INVALID_MEDIA_URL: &str = ErrorCode::InvalidMediaUrl.as_str();
    pub const CANCELLED: &str = ErrorCode::Cancelled.as_str();
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptStatus::*;

    #[test]
    fn statuses_only_move_forward() {
        assert!(Queued.can_move_to(Sending));
        assert!(Sending.can_move_to(Accepted));
        assert!(
            Accepted.can_move_to(Read),
            "a read receipt may overtake delivered"
        );
        assert!(Delivered.can_move_to(Read));
        assert!(!Read.can_move_to(Delivered));
        assert!(!Delivered.can_move_to(Accepted));
        assert!(!Sending.can_move_to(Queued));
        assert!(!Failed.can_move_to(Accepted));
        assert!(!Failed.can_move_to(Failed));
        assert!(Sending.can_move_to(Failed));
        assert!(Accepted.can_move_to(Failed));
        assert!(!Delivered.can_move_to(Failed));
        assert!(!Read.can_move_to(Read));
    }

    #[test]
    fn predecessors_match_can_move_to() {
        assert_eq!(AttemptStatus::predecessors(Accepted), vec![Queued, Sending]);
        assert_eq!(
            AttemptStatus::predecessors(Failed),
            vec![Queued, Sending, Accepted]
        );
        for s in AttemptStatus::ALL {
            assert_eq!(AttemptStatus::parse(s.as_str()), Some(s));
        }
    }
}
