//! How the domain's enums are stored: as their wire names, in TEXT columns.
//! An unknown stored value is an error when read, never a silent default
//! (a row that says `"sent"` is a bug or a newer schema, not a failure).

use super::db::{Error, FromValue, Result, ToParam, Value};
use crate::domain::{AccountStatus, AttemptStatus, DriverKind, Role, SenderMode};

macro_rules! stored_as_text {
    ($type:ty, $what:literal) => {
        impl ToParam for $type {
            fn to_value(&self) -> Value<'_> {
                Value::Text(self.as_str())
            }
        }

        impl FromValue for $type {
            fn from_value(v: Value<'_>) -> Result<Self> {
                let text = String::from_value(v)?;
                <$type>::parse(&text).ok_or_else(|| {
                    Error::Decode(format!("unknown {} {text:?} in the database", $what))
                })
            }
        }
    };
}

stored_as_text!(AttemptStatus, "attempt status");
stored_as_text!(AccountStatus, "account status");
stored_as_text!(DriverKind, "driver");
stored_as_text!(SenderMode, "sender mode");
stored_as_text!(Role, "role");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Conn;

    #[test]
    fn stored_names_round_trip_and_unknown_ones_are_errors() {
        let conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        for status in AttemptStatus::ALL {
            let back: AttemptStatus = conn.query_row("SELECT ?1", [status], |r| r.get(0)).unwrap();
            assert_eq!(back, status);
        }
        let mode: SenderMode = conn
            .query_row("SELECT 'workspace'", (), |r| r.get(0))
            .unwrap();
        assert_eq!(mode, SenderMode::Workspace);
        let unknown = conn.query_row("SELECT 'sent'", (), |r| r.get::<_, AttemptStatus>(0));
        let message = unknown.unwrap_err().to_string();
        assert!(
            message.contains("unknown attempt status \"sent\""),
            "{message}"
        );
        assert!(conn
            .query_row("SELECT 'fax'", (), |r| r.get::<_, DriverKind>(0))
            .is_err());
        assert!(conn
            .query_row("SELECT 'online'", (), |r| r.get::<_, AccountStatus>(0))
            .is_err());
    }
}
