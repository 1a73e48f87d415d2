use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("user {0} already exists (remove it first to replace it)")]
    UserExists(String),
    #[error("no user with extension {0}")]
    NoSuchUser(String),
    #[error("group {0} already exists")]
    GroupExists(String),
    #[error("no group {0}")]
    NoSuchGroup(String),
    #[error("no such user(s) for group members: {} (add them with `ivm user add` first)", .0.join(", "))]
    NoSuchMembers(Vec<String>),
    #[error("no message with id {0}")]
    NoSuchMessage(i64),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the store thread has stopped")]
    Closed,
}
